"""The review loop's data: what waits for a person, their answers, and what they say
about the model.

Two queues (``ReviewQueue``): finished uploads the model flagged ``uncertain``,
newest first; and catalog products whose photo the model puts in another category
than listed, most confident first. An item leaves a queue for everyone once anybody
answered it, and for one reviewer once they skipped it. A product's answer is about
the photo it was given on: a new photo clears ``reviewed_category`` (see
``catalog.queries.upsert_product``) and brings the product back.

Reviewer log-ins are ``catalog.review_sessions``.

Keyword-only functions with an explicit ``session``, like ``catalog.queries``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, not_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from catalog.codes import CATEGORIES, OUT_OF_CATALOG, JobStatus, ReviewAnswer, ReviewQueue
from catalog.models import (
    ApiKey,
    ClassificationJob,
    Product,
    ProductPrediction,
    Review,
    as_utc,
    utcnow,
)
from catalog.queries import (
    as_uuid,
    live_prediction_of_product,
    model_disagrees,
    similar_for_job,
)
from catalog.similar import similar_to_product

#: Similar items shown beside an item.
SIMILAR_SHOWN = 4
#: How long a reviewer can take an answer back (the page offers their latest).
UNDO_WINDOW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Offered:
    """A similar item shown beside the photo under review."""

    product_id: int
    sku: str
    name: str
    score: float
    in_stock: bool


@dataclass(frozen=True)
class ReviewItem:
    """One photo waiting for an answer, with what the model said about it."""

    queue: ReviewQueue
    #: The job's UUID (uploads) or the product's id (audit), as text.
    item_id: str
    image_key: str
    #: The catalog's listed category (audit), ``None`` for uploads.
    listed: str | None
    #: The model's three most likely categories: (label, name, probability).
    top: list[tuple[int, str, float]]
    model_label: int | None
    model_version: str | None
    created_at: dt.datetime | None
    sku: str | None
    name: str | None
    similar: list[Offered]


# --- queues -----------------------------------------------------------------------


def _answered_upload(reviewer_id: int | None):  # type: ignore[no-untyped-def]
    """SQL: someone answered this job, or this reviewer skipped it."""
    return exists().where(
        Review.job_id == ClassificationJob.id,
        (Review.answer != ReviewAnswer.SKIP.value) | (Review.reviewer_id == reviewer_id),
    )


def _answered_product(reviewer_id: int | None):  # type: ignore[no-untyped-def]
    return exists().where(
        Review.product_id == Product.id,
        Review.image_key == Product.image_key,
        (Review.answer != ReviewAnswer.SKIP.value) | (Review.reviewer_id == reviewer_id),
    )


def _uploads_waiting(reviewer_id: int | None):  # type: ignore[no-untyped-def]
    return select(ClassificationJob).where(
        ClassificationJob.status == JobStatus.DONE.value,
        ClassificationJob.uncertain.is_(True),
        not_(_answered_upload(reviewer_id)),
    )


def _audit_waiting(reviewer_id: int | None):  # type: ignore[no-untyped-def]
    return (
        select(Product)
        .join(ProductPrediction, live_prediction_of_product())
        .options(contains_eager(Product.live_prediction))
        .where(
            Product.image_key.is_not(None),
            Product.reviewed_category.is_(None),
            model_disagrees(),
            not_(_answered_product(reviewer_id)),
        )
    )


def queue_lengths(*, session: Session, reviewer_id: int | None = None) -> dict[ReviewQueue, int]:
    """Items waiting in each queue (for ``reviewer_id``: less those they skipped)."""
    counts = {}
    for queue, query in (
        (ReviewQueue.UPLOADS, _uploads_waiting(reviewer_id)),
        (ReviewQueue.AUDIT, _audit_waiting(reviewer_id)),
    ):
        counts[queue] = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return counts


def next_item(
    *,
    session: Session,
    reviewer_id: int,
    queue: ReviewQueue,
    ef_search: int = 40,
    first: str | None = None,
) -> ReviewItem | None:
    """The next item of ``queue`` for this reviewer, or ``None`` when it is empty;
    ``first`` (an item id: an answer just taken back) comes first while it waits."""
    if queue == ReviewQueue.UPLOADS:
        waiting = _uploads_waiting(reviewer_id)
        job_id = None if first is None else as_uuid(first)
        job = session.scalar(waiting.where(ClassificationJob.id == job_id)) if job_id else None
        job = job or session.scalar(
            waiting.order_by(ClassificationJob.created_at.desc(), ClassificationJob.id).limit(1)
        )
        return None if job is None else upload_item(session=session, job=job)
    waiting = _audit_waiting(reviewer_id)
    product = (
        session.scalar(waiting.where(Product.id == int(first)))
        if first is not None and is_row_id(first)
        else None
    )
    product = product or session.scalar(
        waiting.order_by(ProductPrediction.confidence.desc(), Product.sku).limit(1)
    )
    return (
        None
        if product is None
        else audit_item(session=session, product=product, ef_search=ef_search)
    )


def upload_item(*, session: Session, job: ClassificationJob) -> ReviewItem:
    offered = similar_for_job(session=session, job_id=job.id) or []
    ids = dict(
        session.execute(
            select(Product.sku, Product.id).where(Product.sku.in_([item.sku for item in offered]))
        ).all()
    )
    return ReviewItem(
        queue=ReviewQueue.UPLOADS,
        item_id=str(job.id),
        image_key=job.image_key,
        listed=None,
        top=top_three(job.probabilities, job.label, job.confidence),
        model_label=job.label,
        model_version=job.model_version,
        created_at=job.created_at,
        sku=None,
        name=job.filename,
        similar=[
            Offered(ids[item.sku], item.sku, item.name, item.score, item.in_stock)
            for item in offered[:SIMILAR_SHOWN]
            if item.sku in ids
        ],
    )


def audit_item(*, session: Session, product: Product, ef_search: int = 40) -> ReviewItem:
    """``product`` as the audit queue shows it: what the live model sees in its photo
    (it has the live version's prediction: the queue holds no others)."""
    prediction = product.live_prediction
    ranked = similar_to_product(
        session=session,
        product=product,
        model_version=prediction.model_version,
        top_k=SIMILAR_SHOWN,
        ef_search=ef_search,
    )
    return ReviewItem(
        queue=ReviewQueue.AUDIT,
        item_id=str(product.id),
        image_key=product.image_key or "",
        listed=product.category,
        top=top_three(prediction.probabilities, prediction.label, prediction.confidence),
        model_label=prediction.label,
        model_version=prediction.model_version,
        created_at=prediction.classified_at,
        sku=product.sku,
        name=product.name,
        similar=[
            Offered(other.id, other.sku, other.name, score, other.in_stock)
            for other, score in ranked
        ],
    )


def top_three(
    probabilities: Sequence[float] | None, label: int | None, confidence: float | None
) -> list[tuple[int, str, float]]:
    """The three most likely categories; the top one alone where only it was kept
    (products classified before migration 0010)."""
    if probabilities:
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[:3]
        return [(i, CATEGORIES[i], float(probabilities[i])) for i in order]
    if label is None:
        return []
    return [(label, CATEGORIES[label], float(confidence or 0.0))]


# --- answers ----------------------------------------------------------------------


class ReviewError(ValueError):
    """The answer names no waiting item, or is not a valid answer."""


def record_answer(
    *,
    session: Session,
    reviewer: ApiKey,
    queue: ReviewQueue,
    item_id: str,
    answer: ReviewAnswer,
    label: int | None = None,
) -> Review:
    """Store ``reviewer``'s answer about an item (again: the new answer replaces theirs).

    An audit answer naming a category (or out of catalog) becomes the product's
    ``reviewed_category``; the latest answer wins.
    """
    if (answer == ReviewAnswer.LABEL) != (label is not None):
        raise ReviewError("a category answer needs its label, and only it")
    if label is not None and not 0 <= label < len(CATEGORIES):
        raise ReviewError(f"label must be 0-{len(CATEGORIES) - 1}")
    if queue == ReviewQueue.UPLOADS:
        job_id = as_uuid(item_id)
        job = None if job_id is None else session.get(ClassificationJob, job_id)
        if job is None or job.status != JobStatus.DONE:
            raise ReviewError(f"no finished upload {item_id}")
        where = and_(Review.job_id == job.id, Review.reviewer_id == reviewer.id)
        fields = {"job_id": job.id, "image_key": job.image_key}
        model_label, model_version = job.label, job.model_version
    else:
        product = session.get(Product, int(item_id)) if is_row_id(item_id) else None
        if product is None or product.image_key is None:
            raise ReviewError(f"no product {item_id} with a photo")
        where = and_(
            Review.product_id == product.id,
            Review.image_key == product.image_key,
            Review.reviewer_id == reviewer.id,
        )
        fields = {"product_id": product.id, "image_key": product.image_key}
        prediction = product.live_prediction
        model_label, model_version = (
            (None, None) if prediction is None else (prediction.label, prediction.model_version)
        )
        if answer != ReviewAnswer.SKIP:
            product.reviewed_category = _reviewed_category(label)
    review = session.scalar(select(Review).where(where))
    if review is None:
        review = Review(reviewer_id=reviewer.id, reviewer_name=reviewer.name, **fields)
        session.add(review)
    review.answer = answer.value
    review.label = label
    review.model_label = model_label
    review.model_version = model_version
    review.created_at = utcnow()
    try:
        session.flush()
    except IntegrityError as exc:  # the same reviewer, twice at once (a double click)
        raise ReviewError("this item was answered twice at once; answer again") from exc
    return review


@dataclass(frozen=True)
class LastAnswer:
    """A reviewer's answer that can still be taken back, as the page shows it."""

    review_id: int
    queue: ReviewQueue
    item_id: str
    #: The upload's file name or the product's SKU.
    item: str
    #: The category's name, "Not in the catalog" or "Skip".
    answer: str


def last_answer(
    *, session: Session, reviewer_id: int, now: dt.datetime | None = None
) -> LastAnswer | None:
    """``reviewer_id``'s latest answer, while it can be taken back (``UNDO_WINDOW``)."""
    cutoff = (now or utcnow()) - UNDO_WINDOW
    review = session.scalar(
        select(Review)
        .where(Review.reviewer_id == reviewer_id, Review.created_at >= cutoff)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(1)
    )
    return None if review is None else _as_last_answer(session, review)


def undo_answer(
    *, session: Session, reviewer_id: int, review_id: int, now: dt.datetime | None = None
) -> LastAnswer:
    """Take back ``reviewer_id``'s answer ``review_id`` (theirs, at most ``UNDO_WINDOW``
    old): the item waits again for everyone, and a product's ``reviewed_category`` is
    again what the latest remaining answer about its photo says (none: ``None``)."""
    review = session.get(Review, review_id)
    if review is None or review.reviewer_id != reviewer_id:
        raise ReviewError("there is no such answer of yours to take back")
    if as_utc(review.created_at) < (now or utcnow()) - UNDO_WINDOW:
        minutes = int(UNDO_WINDOW.total_seconds() // 60)
        raise ReviewError(f"an answer can be taken back for {minutes} minutes; this one is older")
    taken = _as_last_answer(session, review)
    session.delete(review)
    session.flush()
    product = None if review.product_id is None else session.get(Product, review.product_id)
    if product is not None and product.image_key == review.image_key:
        latest = session.scalar(
            select(Review)
            .where(
                Review.product_id == product.id,
                Review.image_key == product.image_key,
                Review.answer != ReviewAnswer.SKIP.value,
            )
            .order_by(Review.created_at.desc(), Review.id.desc())
            .limit(1)
        )
        product.reviewed_category = None if latest is None else _reviewed_category(latest.label)
    return taken


def _reviewed_category(label: int | None) -> str:
    """What an answer naming ``label`` (``None``: out of catalog) makes a product's
    ``reviewed_category``."""
    return CATEGORIES[label] if label is not None else OUT_OF_CATALOG


def _as_last_answer(session: Session, review: Review) -> LastAnswer:
    if review.job_id is not None:
        queue, item_id = ReviewQueue.UPLOADS, str(review.job_id)
        item = session.scalar(
            select(ClassificationJob.filename).where(ClassificationJob.id == review.job_id)
        )
    else:
        queue, item_id = ReviewQueue.AUDIT, str(review.product_id)
        item = session.scalar(select(Product.sku).where(Product.id == review.product_id))
    answer = {
        ReviewAnswer.OUT_OF_CATALOG.value: "Not in the catalog",
        ReviewAnswer.SKIP.value: "Skip",
    }.get(review.answer) or CATEGORIES[review.label or 0]
    return LastAnswer(review.id, queue, item_id, item or item_id, answer)


def is_row_id(text: str) -> bool:
    """``text`` is a product id the database can hold (an INTEGER)."""
    return text.isascii() and text.isdigit() and len(text) <= 9
