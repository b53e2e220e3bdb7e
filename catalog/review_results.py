"""What reviewers' answers amount to: how often the model agrees with them (the page
and ``/metrics``), and the answer each reviewed photo settled on (the export).

Keyword-only functions with an explicit ``session``, like ``catalog.queries``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.codes import ReviewAnswer
from catalog.models import Review

#: Agreement of the model with reviewers is measured over this many latest answers
#: that name a category.
AGREEMENT_WINDOW = 200


@dataclass(frozen=True)
class ReviewStats:
    by_answer: dict[str, int]
    #: Share of the latest ``AGREEMENT_WINDOW`` category answers where the model's
    #: top class was the reviewer's (``None``: none yet), and how many it is over.
    agreement: float | None
    agreement_over: int


def review_stats(*, session: Session) -> ReviewStats:
    by_answer = {answer.value: 0 for answer in ReviewAnswer}
    for answer, count in session.execute(
        select(Review.answer, func.count()).group_by(Review.answer)
    ):
        by_answer[answer] = count
    latest = session.execute(
        select(Review.label, Review.model_label)
        .where(Review.answer == ReviewAnswer.LABEL.value)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(AGREEMENT_WINDOW)
    ).all()
    agreement = (
        sum(label == model_label for label, model_label in latest) / len(latest) if latest else None
    )
    return ReviewStats(by_answer, agreement, len(latest))


# --- the export ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reviewed:
    """One photo and what its reviewers settled on (``label`` ``None``: out of catalog)."""

    key: str
    image_key: str
    label: int | None
    reviewers: int


def settled_answers(
    *, session: Session, since: dt.datetime | None = None
) -> tuple[list[Reviewed], int]:
    """Every reviewed photo (answered since ``since``) with the answer most of its
    reviewers gave, and how many photos were left out because reviewers split evenly.
    Skips are not answers. An erased upload's reviews went with it."""
    query = select(
        Review.job_id, Review.product_id, Review.image_key, Review.answer, Review.label
    ).where(Review.answer != ReviewAnswer.SKIP.value)
    if since is not None:
        query = query.where(Review.created_at >= since)
    votes: dict[tuple[str, str], Counter[int | None]] = {}
    for job_id, product_id, image_key, _answer, label in session.execute(query.order_by(Review.id)):
        # A product's photo may change: each photo it had is its own item.
        key = (
            f"upload-{job_id}"
            if job_id is not None
            else f"product-{product_id}-{hashlib.sha256(image_key.encode()).hexdigest()[:8]}"
        )
        votes.setdefault((key, image_key), Counter())[label] += 1
    settled, split = [], 0
    for (key, image_key), counter in votes.items():
        ranked = counter.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            split += 1
            continue
        settled.append(Reviewed(key, image_key, ranked[0][0], sum(counter.values())))
    return settled, split
