"""A folder of real photos laid out as ``<folder>/<class>/<image>``, and its mapping
onto Fashion-MNIST classes: what scoring them (``training.photos``) and training on
them (``training.photo_data``) share. Light on purpose (no inference engine,
no Keras): a training machine without LiteRT imports it too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from training.data import CLASS_NAMES

#: Photo class → Fashion-MNIST class indices; None: out of catalog; "skip": not scored.
DEFAULT_MAPPING: dict[str, list[int] | str | None] = {
    "t-shirt": [0],
    "pants": [1],
    "dress": [3],
    "outwear": [4],
    "shirt": [6],
    "shoes": [5, 7, 9],
    "longsleeve": "skip",
    "hat": None,
    "shorts": None,
    "skirt": None,
}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 100_000_000


class PhotoFolderError(ValueError):
    """The folder or the mapping is not usable; the message says why."""


def load_mapping(path: Path | None) -> dict[str, list[int] | str | None]:
    if path is None:
        return dict(DEFAULT_MAPPING)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PhotoFolderError(f"cannot read the mapping {path}: {exc}") from exc
    if not isinstance(mapping, dict):
        raise PhotoFolderError(f"{path}: expected a JSON object of class → classes")
    for name, target in mapping.items():
        valid = (
            target is None
            or target == "skip"
            or (
                isinstance(target, list)
                and target
                and all(isinstance(i, int) and 0 <= i < len(CLASS_NAMES) for i in target)
            )
        )
        if not valid:
            raise PhotoFolderError(
                f"{path}: {name!r} maps to {target!r}; use a list of class indices "
                f'0-{len(CLASS_NAMES) - 1}, null (not in the catalog) or "skip"'
            )
    return mapping


#: A photo folder may carry its own mapping beside its class folders (``fashion
#: reviews export`` writes one); it is used when no ``--mapping`` is given.
MAPPING_FILENAME = "mapping.json"


def mapping_for(folder: Path, path: Path | None = None) -> dict[str, list[int] | str | None]:
    """The mapping at ``path``; else the folder's own ``mapping.json``; else the
    development photos' (``DEFAULT_MAPPING``)."""
    if path is None and (folder / MAPPING_FILENAME).is_file():
        path = folder / MAPPING_FILENAME
    return load_mapping(path)


def photo_files(folder: Path) -> dict[str, list[Path]]:
    """Class name → its image files (sorted), from ``folder/<class>/<image>``."""
    if not folder.is_dir():
        raise PhotoFolderError(f"{folder} is not a folder")
    classes = {
        child.name: sorted(
            f for f in child.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        for child in sorted(folder.iterdir())
        if child.is_dir()
    }
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        raise PhotoFolderError(f"{folder} has no <class>/<image> files")
    return classes


#: The two folders ``split_photos`` writes.
SPLIT_PARTS = ("fit", "held-out")


def split_photos(folder: Path, out: Path, held_out: float, seed: int) -> dict[str, dict[str, int]]:
    """Split a photo folder in two, class by class: ``out/held-out/`` gets
    ``held_out`` of each class's photos (a seeded draw), ``out/fit/`` the rest. So a
    model can train on ``fit/`` while its photo threshold is fitted on photos it
    never saw. The parts hold symbolic links to the photos, not copies; the
    folder's ``mapping.json`` goes with both. Returns photos per class and part."""
    if not 0 < held_out < 1:
        raise PhotoFolderError(f"the held-out share must be between 0 and 1, not {held_out}")
    parts = [out / part for part in SPLIT_PARTS]
    if any(part.exists() for part in parts):
        raise PhotoFolderError(f"{out} already holds a split; choose another --out")
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {part: {} for part in SPLIT_PARTS}
    for name, files in photo_files(folder).items():
        chosen = set(rng.sample(range(len(files)), round(held_out * len(files))))
        for index, path in enumerate(files):
            part = SPLIT_PARTS[1] if index in chosen else SPLIT_PARTS[0]
            target = out / part / name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
            counts[part][name] = counts[part].get(name, 0) + 1
    if (folder / MAPPING_FILENAME).is_file():
        for part in parts:
            (part / MAPPING_FILENAME).write_text((folder / MAPPING_FILENAME).read_text())
    return counts
