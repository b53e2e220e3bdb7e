"""Synchronous classification of local files: ``fashion classify``, no broker, no database."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from catalog.codes import CATEGORIES
from worker.config import Settings
from worker.errors import ErrorCode, ImageError
from worker.files import read_at_most
from worker.pipeline.classifier import get_classifier
from worker.pipeline.preprocess import prepare


def classify_files(paths: Iterable[Path], settings: Settings) -> Iterator[dict[str, Any]]:
    """Yield one result per file: label, name, confidence -- or an error code and message."""
    classifier = get_classifier(settings)
    for path in paths:
        try:
            data = read_at_most(path, settings.max_upload_bytes)
        except OSError as exc:
            error = ImageError(ErrorCode.UNREADABLE, f"cannot read the file: {exc.strerror or exc}")
            yield {"file": str(path), "error": {"code": error.code, "message": error.message}}
            continue
        try:
            prepared = prepare(
                data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )
        except ImageError as exc:
            yield {"file": str(path), "error": {"code": exc.code, "message": exc.message}}
            continue
        (prediction,) = classifier.classify([prepared])
        yield {
            "file": str(path),
            "label": prediction.label,
            "name": CATEGORIES[prediction.label],
            "confidence": round(prediction.confidence, 4),
            "uncertain": prediction.uncertain,
            "family": prediction.family,
        }
