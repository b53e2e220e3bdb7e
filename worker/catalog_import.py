"""``fashion catalog import``: upsert products, store photos, queue them for classification."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from catalog.db import get_sessionmaker
from catalog.importer import ProductRow, RejectedRow, read_products
from catalog.queries import get_product, upsert_product
from worker.client import enqueue_product_classification
from worker.config import Settings
from worker.storage import InvalidKeyError, get_store

COMMIT_EVERY = 500


@dataclass
class ImportReport:
    inserted: int = 0
    updated: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    missing_photos: list[RejectedRow] = field(default_factory=list)
    queued: int = 0

    def as_dict(self) -> dict:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "rejected": [{"row": r.row, "reason": r.reason} for r in self.rejected],
            "missing_photos": [{"row": r.row, "reason": r.reason} for r in self.missing_photos],
            "queued_for_classification": self.queued,
        }


def _store_photo(settings: Settings, source: Path, row: ProductRow) -> str | RejectedRow:
    photo = (source.parent / row.image).resolve() if row.image else None
    if photo is not None:
        if not photo.is_file():
            return RejectedRow(row.row, f"photo {row.image!r} not found")
        key = f"products/{row.sku}{photo.suffix.lower()}"
        try:
            content_type = mimetypes.guess_type(photo.name)[0]
            get_store(settings).put(key, photo.read_bytes(), content_type=content_type)
        except InvalidKeyError:
            return RejectedRow(row.row, f"sku {row.sku!r} cannot be used in a storage key")
        return key
    if row.image_key:
        try:
            if get_store(settings).exists(row.image_key):
                return row.image_key
        except InvalidKeyError:
            return RejectedRow(row.row, f"invalid image_key {row.image_key!r}")
        return RejectedRow(row.row, f"image_key {row.image_key!r} is not in storage")
    return RejectedRow(row.row, "no photo given (image or image_key)")


def import_catalog(
    path: Path,
    *,
    settings: Settings,
    queue: bool = True,
    on_row: Callable[[], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of ``path``; report the rest. New or changed photos are queued."""
    report = ImportReport()
    to_classify: dict[int, None] = {}  # ordered and without repeats
    sessions = get_sessionmaker(settings.resolved_database_url)
    session = sessions()
    try:
        for pending, item in enumerate(read_products(path), start=1):
            if on_row:
                on_row()
            if isinstance(item, RejectedRow):
                report.rejected.append(item)
                continue
            key = _store_photo(settings, path, item)
            if isinstance(key, RejectedRow):
                report.missing_photos.append(key)
                key = None
            existing = get_product(session=session, sku=item.sku)
            photo_changed = existing is None or existing.image_key != key
            product = upsert_product(
                session=session,
                sku=item.sku,
                name=item.name,
                category=item.category,
                price=item.price,
                stock_quantity=item.stock_quantity,
                image_key=key,
            )
            if existing is None:
                report.inserted += 1
            else:
                report.updated += 1
            if key and (photo_changed or product.model_version is None):
                if photo_changed:
                    product.model_version = None
                to_classify[product.id] = None
            if pending % COMMIT_EVERY == 0:
                session.commit()
        session.commit()
    finally:
        session.close()
    if queue and to_classify:
        report.queued = enqueue_product_classification(list(to_classify), settings=settings)
    return report
