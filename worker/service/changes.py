"""What a nightly run must do: only the products whose photo or model changed.

The store is listed (S3 ListObjects: key and ETag, 1,000 keys per request, no
object read) and each product's photo tag compared with the one it recorded
when a worker last read its photo (``Product.photo_etag``). A product is queued
when it is

- ``new``: never classified, by any version;
- ``photo_changed``: its photo's tag differs from the recorded one (replaced in
  place, or gone: the worker then records ``object_missing``);
- ``photo_unverified``: classified before tags were recorded (once per product);
- ``preprocessing``: its kept model input was made by another ``PREPROCESS_VERSION``;
- ``model``: classified by another model version, not by this one -- from its
  kept input, no fetch.

Everything else is ``unchanged`` and costs one row of a SELECT and one entry of
the listing. The first four have their kept input invalidated, so the worker
fetches and decodes the photo again; a ``model`` product is re-classified from
its kept input. Imports need no listing of their own: an imported photo that
changed gets a new content-addressed key, which is a ``photo_changed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from catalog.models import Product, ProductPrediction
from worker.pipeline.preprocess import PREPROCESS_VERSION
from worker.storage import ObjectStore

REASONS = ("new", "photo_changed", "photo_unverified", "preprocessing", "model", "unchanged")
#: Reasons whose kept model input cannot be trusted: the photo is read again.
REFETCH = frozenset({"photo_changed", "photo_unverified", "preprocessing"})
#: Products per invalidating UPDATE.
UPDATE_BATCH = 1_000


@dataclass(frozen=True)
class Plan:
    product_ids: list[int]  # to queue, in id order
    refetch: list[int]  # whose kept input is invalidated
    reasons: dict[str, int]  # products per reason, ``unchanged`` included


def listing_prefixes(image_keys: Iterable[str]) -> list[str]:
    """The fewest prefixes to list for these keys: their first folders, or the
    whole store when some key has no folder."""
    prefixes = {key.split("/", 1)[0] + "/" if "/" in key else "" for key in image_keys}
    return [""] if "" in prefixes else sorted(prefixes)


def reason_for(row, etag: str | None) -> str:  # type: ignore[no-untyped-def]
    """``row``: the product's columns with ``classified`` (by any version),
    ``current`` (by the planned one) and ``error`` (the planned version's)."""
    if not row.classified:
        return "new"
    if row.photo_etag is None and etag is not None:
        return "photo_unverified" if row.error is None else "photo_changed"
    if etag != row.photo_etag:
        return "photo_changed"
    if row.model_input_key == row.image_key and row.preprocess_version != PREPROCESS_VERSION:
        return "preprocessing"
    if not row.current:
        return "model"
    return "unchanged"


def plan_changes(*, session: Session, store: ObjectStore, version: str) -> Plan:
    """What a ``changed`` run for model ``version`` must queue, and why."""
    other = aliased(ProductPrediction)
    any_version = exists().where(other.product_id == Product.id)
    rows = session.execute(
        select(
            Product.id,
            Product.image_key,
            Product.photo_etag,
            Product.model_input_key,
            Product.preprocess_version,
            any_version.label("classified"),
            ProductPrediction.product_id.is_not(None).label("current"),
            ProductPrediction.error,
        )
        .outerjoin(
            ProductPrediction,
            (ProductPrediction.product_id == Product.id)
            & (ProductPrediction.model_version == version),
        )
        .where(Product.image_key.is_not(None))
        .order_by(Product.id)
    ).all()
    listing: dict[str, str] = {}
    for prefix in listing_prefixes(row.image_key for row in rows):
        listing.update(store.list_etags(prefix))
    reasons: Counter[str] = Counter({reason: 0 for reason in REASONS})
    queued, refetch = [], []
    for row in rows:
        reason = reason_for(row, listing.get(row.image_key))
        reasons[reason] += 1
        if reason != "unchanged":
            queued.append(row.id)
        if reason in REFETCH:
            refetch.append(row.id)
    return Plan(queued, refetch, dict(reasons))


def invalidate_kept_inputs(*, session: Session, product_ids: list[int]) -> None:
    """The worker must read these photos again: their kept inputs no longer count."""
    for start in range(0, len(product_ids), UPDATE_BATCH):
        session.execute(
            update(Product)
            .where(Product.id.in_(product_ids[start : start + UPDATE_BATCH]))
            .values(model_input_key=None)
            .execution_options(synchronize_session=False)
        )
