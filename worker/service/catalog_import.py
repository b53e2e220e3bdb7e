"""``fashion catalog import``: upsert products, store photos, queue them for classification."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from catalog.db import get_sessionmaker
from catalog.importer import ProductRow, RejectedRow, read_products
from catalog.predictions import forget_predictions
from catalog.queries import get_product, upsert_product
from catalog.versions import filled_versions
from worker.config import Settings
from worker.errors import ImageError
from worker.files import read_at_most
from worker.pipeline.preprocess import decode
from worker.service.messages import send_product_chunks
from worker.storage import InvalidKeyError, get_store

COMMIT_EVERY = 500
#: Catalog photos live under this prefix; customers' uploads under ``uploads/``.
PRODUCTS_PREFIX = "products/"


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


def _store_photo(settings: Settings, folder: Path, row: ProductRow) -> str | RejectedRow:
    """Store the row's photo, or check its ``image_key``; the key, or why not.

    A photo must lie inside the catalog file's folder (after resolving ``..`` and
    symlinks) and be an image the worker accepts; it is stored under a key made
    of its content's hash, so a changed photo gets a new key (and is classified
    again) and no two products' photos can collide. An ``image_key`` must name an
    object already under ``products/``, never a customer's upload.
    """
    if row.image:
        photo = (folder / row.image).resolve()
        if not photo.is_relative_to(folder):
            return RejectedRow(row.row, f"photo {row.image!r} is outside the catalog's folder")
        try:
            data = read_at_most(photo, settings.max_upload_bytes)
        except OSError:
            return RejectedRow(row.row, f"photo {row.image!r} not found")
        try:
            image = decode(
                data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )
        except ImageError as exc:
            return RejectedRow(row.row, f"photo {row.image!r} is not accepted: {exc.code}")
        key = f"{PRODUCTS_PREFIX}{hashlib.sha256(data).hexdigest()}.{image.format.lower()}"
        get_store(settings).put(key, data, content_type=Image.MIME.get(image.format))
        return key
    if row.image_key:
        if not row.image_key.startswith(PRODUCTS_PREFIX):
            return RejectedRow(row.row, f"image_key must start with {PRODUCTS_PREFIX!r}")
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
    """Upsert every valid row of ``path``; report the rest. New or changed photos are queued.

    Each row stands alone: a row that fails validation (``catalog.importer``: the
    columns, their bounds, NUL, size, encoding) or whose photo is refused is
    reported with its row number and the import goes on; every other row is
    imported. Rows are committed every ``COMMIT_EVERY``.
    """
    report = ImportReport()
    folder = path.parent.resolve()
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
            key = _store_photo(settings, folder, item)
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
            if key and (photo_changed or product.live_prediction is None):
                if photo_changed:
                    # What every version saw was the old photo: offered by none
                    # until it is classified again.
                    forget_predictions(session=session, product_ids=[product.id])
                to_classify[product.id] = None
            if pending % COMMIT_EVERY == 0:
                session.commit()
        session.commit()
    finally:
        session.close()
    if queue and to_classify:
        with sessions() as session:
            versions = filled_versions(session=session)
        # The live version first: its uploads are waiting for these products.
        for version in versions or [None]:
            send_product_chunks(settings, list(to_classify), model_version=version)
        report.queued = len(to_classify)
    return report
