"""``fashion reviews export DIR``: reviewed photos, laid out for the photo tools.

The layout is the one ``fashion evaluate --photos``, ``fashion fit-photo-threshold``
and ``fashion finetune-photos`` read: ``DIR/<answer>/<photo>``, one folder per
answer (the ten categories and ``out-of-catalog``), with ``DIR/mapping.json``
beside them (folder → Fashion-MNIST class indices, ``null`` for out of catalog),
which those commands pick up by themselves. A photo several reviewers answered
goes where most of them put it; an even split is left out (and counted). Files
are named after the item (``upload-<job id>``, ``product-<id>``), so exporting
again into the same folder rewrites rather than duplicates; the photo's bytes are
written as stored (a format the photo tools do not read is converted to PNG).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from catalog.codes import CATEGORIES
from catalog.db import get_sessionmaker
from catalog.review_results import settled_answers
from worker.config import Settings
from worker.errors import FashionError, ImageError
from worker.pipeline.preprocess import decode, flatten
from worker.storage import get_store

MAPPING_FILENAME = "mapping.json"
OUT_OF_CATALOG_FOLDER = "out-of-catalog"
#: What Pillow calls a format → the suffix the photo tools recognise.
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def folder_name(label: int | None) -> str:
    """``T-shirt/top`` → ``t-shirt-top``; ``None`` (out of catalog) → ``out-of-catalog``."""
    if label is None:
        return OUT_OF_CATALOG_FOLDER
    return re.sub(r"[^a-z0-9]+", "-", CATEGORIES[label].lower()).strip("-")


def export_mapping() -> dict[str, list[int] | None]:
    """Every folder an export may hold → its Fashion-MNIST classes (``None``: out of
    catalog), in the format of ``training.photo_folders.load_mapping``."""
    mapping: dict[str, list[int] | None] = {
        folder_name(label): [label] for label in range(len(CATEGORIES))
    }
    mapping[OUT_OF_CATALOG_FOLDER] = None
    return mapping


@dataclass
class ExportReport:
    folder: Path
    written: dict[str, int] = field(default_factory=dict)
    #: Photos whose reviewers split evenly (not exported).
    split: int = 0
    #: Photos not exported: gone from storage, or not an image (``item: reason``).
    missing: list[str] = field(default_factory=list)

    @property
    def photos(self) -> int:
        return sum(self.written.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "folder": str(self.folder),
            "photos": self.photos,
            "by_folder": self.written,
            "split": self.split,
            "missing": self.missing,
        }


def export_reviews(
    folder: Path, *, settings: Settings, since: dt.datetime | None = None
) -> ExportReport:
    """Write every reviewed photo (answered since ``since``) under ``folder``."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        settled, split = settled_answers(session=session, since=since)
    folder.mkdir(parents=True, exist_ok=True)
    report = ExportReport(folder, split=split)
    store = get_store(settings)
    for item in settled:
        try:
            data = store.get(item.image_key)
        except FashionError as exc:
            report.missing.append(f"{item.key}: {exc.code}")
            continue
        converted = as_photo_file(data, settings=settings)
        if converted is None:
            report.missing.append(f"{item.key}: unreadable")
            continue
        data, suffix = converted
        target = folder / folder_name(item.label)
        target.mkdir(exist_ok=True)
        for stale in target.glob(f"{item.key}.*"):
            stale.unlink()
        (target / f"{item.key}{suffix}").write_bytes(data)
        report.written[target.name] = report.written.get(target.name, 0) + 1
    (folder / MAPPING_FILENAME).write_text(json.dumps(export_mapping(), indent=2) + "\n")
    return report


def as_photo_file(data: bytes, *, settings: Settings) -> tuple[bytes, str] | None:
    """The bytes and a suffix the photo tools read: as stored when they know the
    format, else the photo as the worker read it (the pipeline's bounded ``decode``
    and ``flatten``: a float or 16-bit TIFF included, which PNG cannot hold as it
    is), re-encoded as PNG; ``None`` if the worker could not read it either."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            suffix = SUFFIXES.get(image.format or "")
        if suffix is not None:
            return data, suffix
        image = flatten(
            decode(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
        )
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue(), ".png"
    except (UnidentifiedImageError, OSError, ImageError):
        return None
