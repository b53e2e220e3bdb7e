"""The review loop's data (``catalog.reviews``) on SQLite and PostgreSQL: the two
queues, answers, the audit's respect for them, agreement, the settled answers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.codes import CATEGORIES, OUT_OF_CATALOG, ReviewAnswer, ReviewQueue
from catalog.lifecycle import delete_jobs
from catalog.models import Product, ProductPrediction, Review
from catalog.queries import audit_mismatches, upsert_product
from catalog.review_results import review_stats, settled_answers
from catalog.review_sessions import close_session, find_session, open_session
from catalog.reviews import (
    UNDO_WINDOW,
    ReviewError,
    last_answer,
    next_item,
    queue_lengths,
    record_answer,
    undo_answer,
)
from tests.support.factories import answer, make_flagged_upload, make_product, make_reviewer

BAG, DRESS, COAT, PULLOVER = (
    CATEGORIES.index(name) for name in ("Bag", "Dress", "Coat", "Pullover")
)


def mislisted_product(session: Session, sku: str = "DRS-9") -> Product:
    """Listed as a Dress; the model sees a Bag (90 %)."""
    product = make_product(
        session, sku=sku, category="Dress", embedding=np.ones(8), model_version="test-model"
    )
    product.image_key = f"products/{sku}.png"
    prediction = session.get(ProductPrediction, (product.id, "test-model"))
    prediction.label, prediction.confidence = BAG, 0.9
    prediction.probabilities = [0.01] * 8 + [0.9, 0.01]
    session.flush()
    return product


def test_a_flagged_upload_waits_with_the_models_top_three(session: Session) -> None:
    alice = make_reviewer(session)
    job = make_flagged_upload(session)

    item = next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.UPLOADS)

    assert item is not None and item.item_id == str(job.id)
    assert [name for _, name, _ in item.top] == ["Pullover", "Coat", "Shirt"]
    assert item.top[0][2] == pytest.approx(0.55)
    assert queue_lengths(session=session) == {ReviewQueue.UPLOADS: 1, ReviewQueue.AUDIT: 0}


def test_an_answered_upload_leaves_every_queue_and_a_skipped_one_only_the_skippers(
    session: Session,
) -> None:
    alice, bob = make_reviewer(session, "alice"), make_reviewer(session, "bob")
    answered, skipped = make_flagged_upload(session), make_flagged_upload(session)

    answer(session, alice, answered, ReviewAnswer.LABEL, COAT)
    answer(session, alice, skipped, ReviewAnswer.SKIP)

    assert next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.UPLOADS) is None
    left_for_bob = next_item(session=session, reviewer_id=bob.id, queue=ReviewQueue.UPLOADS)
    assert left_for_bob is not None and left_for_bob.item_id == str(skipped.id)
    assert queue_lengths(session=session, reviewer_id=alice.id)[ReviewQueue.UPLOADS] == 0
    assert queue_lengths(session=session)[ReviewQueue.UPLOADS] == 1


def test_answering_again_replaces_the_reviewers_answer(session: Session) -> None:
    alice = make_reviewer(session)
    job = make_flagged_upload(session)
    for label in (COAT, PULLOVER):
        answer(session, alice, job, ReviewAnswer.LABEL, label)
    reviews = list(session.scalars(select(Review)))
    assert [(r.label, r.model_label, r.reviewer_name) for r in reviews] == [
        (PULLOVER, PULLOVER, "alice")
    ]


def test_an_answer_must_name_a_finished_item_and_a_valid_label(session: Session) -> None:
    alice = make_reviewer(session)
    job = make_flagged_upload(session)
    with pytest.raises(ReviewError, match="no finished upload"):
        record_answer(
            session=session,
            reviewer=alice,
            queue=ReviewQueue.UPLOADS,
            item_id="not-a-uuid",
            answer=ReviewAnswer.SKIP,
        )
    with pytest.raises(ReviewError, match="label"):
        answer(session, alice, job, ReviewAnswer.LABEL)
    with pytest.raises(ReviewError, match="label must be"):
        answer(session, alice, job, ReviewAnswer.LABEL, 10)
    assert session.scalar(select(func.count()).select_from(Review)) == 0


def test_a_product_answer_becomes_its_reviewed_category_and_the_audit_respects_it(
    session: Session,
) -> None:
    alice = make_reviewer(session)
    confirmed, relisted = mislisted_product(session, "DRS-1"), mislisted_product(session, "DRS-2")
    before = {p.sku for p in audit_mismatches(session=session)}
    queued = next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.AUDIT)

    for product, label in ((confirmed, DRESS), (relisted, BAG)):
        answer(session, alice, product, ReviewAnswer.LABEL, label, queue=ReviewQueue.AUDIT)

    assert before == {"DRS-1", "DRS-2"}
    assert queued is not None and queued.listed == "Dress" and queued.top[0][1] == "Bag"
    assert (confirmed.reviewed_category, relisted.reviewed_category) == ("Dress", "Bag")
    # Confirmed as listed: no longer a mismatch; confirmed as another category: still
    # one, as the reviewer said, and nobody is asked about either again.
    assert [p.sku for p in audit_mismatches(session=session)] == ["DRS-2"]
    assert next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.AUDIT) is None


def test_out_of_catalog_on_a_product_is_kept_and_a_new_photo_brings_it_back(
    session: Session,
) -> None:
    alice = make_reviewer(session)
    product = mislisted_product(session)
    answer(session, alice, product, ReviewAnswer.OUT_OF_CATALOG, queue=ReviewQueue.AUDIT)
    assert product.reviewed_category == OUT_OF_CATALOG
    assert next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.AUDIT) is None

    upsert_product(
        session=session,
        sku=product.sku,
        name=product.name,
        category=product.category,
        price=product.price,
        stock_quantity=product.stock_quantity,
        image_key="products/new-photo.png",
    )

    assert product.reviewed_category is None
    back = next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.AUDIT)
    assert back is not None and back.item_id == str(product.id)
    answer(session, alice, product, ReviewAnswer.LABEL, BAG, queue=ReviewQueue.AUDIT)
    # Each photo the product had is its own reviewed item.
    settled, _ = settled_answers(session=session)
    assert sorted((item.image_key, item.label) for item in settled) == [
        ("products/DRS-9.png", None),
        ("products/new-photo.png", BAG),
    ]
    assert len({item.key for item in settled}) == 2


def test_erasing_an_upload_erases_its_reviews(session: Session) -> None:
    alice = make_reviewer(session)
    job = make_flagged_upload(session)
    answer(session, alice, job, ReviewAnswer.LABEL, COAT)
    assert delete_jobs(session=session, job_ids=[str(job.id)]) == 1
    assert session.scalar(select(func.count()).select_from(Review)) == 0
    assert settled_answers(session=session) == ([], 0)


def test_settled_answers_follow_the_majority_and_leave_out_an_even_split(
    session: Session,
) -> None:
    alice, bob, carol = (make_reviewer(session, name) for name in ("alice", "bob", "carol"))
    majority, split, skipped = (make_flagged_upload(session) for _ in range(3))
    for who, job, given, label in (
        (alice, majority, ReviewAnswer.LABEL, COAT),
        (bob, majority, ReviewAnswer.LABEL, COAT),
        (carol, majority, ReviewAnswer.OUT_OF_CATALOG, None),
        (alice, split, ReviewAnswer.LABEL, COAT),
        (bob, split, ReviewAnswer.LABEL, PULLOVER),
        (alice, skipped, ReviewAnswer.SKIP, None),
    ):
        answer(session, who, job, given, label)

    settled, even = settled_answers(session=session)

    assert [(item.key, item.label, item.reviewers) for item in settled] == [
        (f"upload-{majority.id}", COAT, 3)
    ]
    assert even == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert settled_answers(session=session, since=later) == ([], 0)


def test_agreement_counts_category_answers_that_match_the_models_top_class(
    session: Session,
) -> None:
    alice = make_reviewer(session)
    jobs = [make_flagged_upload(session) for _ in range(4)]  # the model says Pullover
    for job, given, label in zip(
        jobs,
        (ReviewAnswer.LABEL, ReviewAnswer.LABEL, ReviewAnswer.LABEL, ReviewAnswer.OUT_OF_CATALOG),
        (PULLOVER, PULLOVER, COAT, None),
        strict=True,
    ):
        answer(session, alice, job, given, label)

    stats = review_stats(session=session)

    assert stats.by_answer == {"label": 3, "out_of_catalog": 1, "skip": 0}
    assert stats.agreement == pytest.approx(2 / 3) and stats.agreement_over == 3


def test_a_reviewer_session_ends_at_logout_or_when_the_key_is_revoked(
    session: Session,
) -> None:
    alice = make_reviewer(session)
    first, second = (
        open_session(session=session, reviewer=alice),
        open_session(session=session, reviewer=alice),
    )
    found = find_session(session=session, token=first.token)
    assert found is not None and found[1].name == "alice"
    assert found[0].csrf_token == first.csrf_token != second.csrf_token
    assert find_session(session=session, token="forged") is None

    close_session(session=session, token=first.token)
    assert find_session(session=session, token=first.token) is None
    alice.revoked_at = dt.datetime.now(dt.UTC)
    session.flush()
    assert find_session(session=session, token=second.token) is None


def test_an_upload_answer_taken_back_puts_the_upload_back_first_in_the_queue(
    session: Session,
) -> None:
    alice = make_reviewer(session)
    wrong, newer = make_flagged_upload(session), make_flagged_upload(session)
    given = answer(session, alice, wrong, ReviewAnswer.LABEL, DRESS)  # meant Coat
    last = last_answer(session=session, reviewer_id=alice.id)
    assert last is not None and (last.review_id, last.answer) == (given.id, "Dress")

    taken = undo_answer(session=session, reviewer_id=alice.id, review_id=given.id)

    assert (taken.queue, taken.item_id) == (ReviewQueue.UPLOADS, str(wrong.id))
    assert session.scalar(select(func.count()).select_from(Review)) == 0
    assert queue_lengths(session=session)[ReviewQueue.UPLOADS] == 2
    shown = next_item(
        session=session, reviewer_id=alice.id, queue=ReviewQueue.UPLOADS, first=taken.item_id
    )
    assert shown is not None and shown.item_id == str(wrong.id)
    unasked = next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.UPLOADS)
    assert unasked is not None and unasked.item_id == str(newer.id)  # newest first otherwise
    assert last_answer(session=session, reviewer_id=alice.id) is None


def test_an_audit_answer_taken_back_leaves_the_earlier_answer_standing(session: Session) -> None:
    alice, bob = make_reviewer(session, "alice"), make_reviewer(session, "bob")
    product = mislisted_product(session)
    answer(session, alice, product, ReviewAnswer.OUT_OF_CATALOG, queue=ReviewQueue.AUDIT)
    bobs = answer(session, bob, product, ReviewAnswer.LABEL, DRESS, queue=ReviewQueue.AUDIT)
    assert product.reviewed_category == "Dress"

    undo_answer(session=session, reviewer_id=bob.id, review_id=bobs.id)
    assert product.reviewed_category == OUT_OF_CATALOG  # alice's answer stands

    alices = session.scalar(select(Review).where(Review.reviewer_id == alice.id))
    undo_answer(session=session, reviewer_id=alice.id, review_id=alices.id)
    assert product.reviewed_category is None
    waiting = next_item(session=session, reviewer_id=alice.id, queue=ReviewQueue.AUDIT)
    assert waiting is not None and waiting.item_id == str(product.id)


def test_only_ones_own_recent_answer_can_be_taken_back(session: Session) -> None:
    alice, bob = make_reviewer(session, "alice"), make_reviewer(session, "bob")
    given = answer(session, alice, make_flagged_upload(session), ReviewAnswer.LABEL, COAT)
    later = given.created_at + UNDO_WINDOW + dt.timedelta(seconds=1)

    with pytest.raises(ReviewError, match="no such answer of yours"):
        undo_answer(session=session, reviewer_id=bob.id, review_id=given.id)
    with pytest.raises(ReviewError, match="taken back for 10 minutes"):
        undo_answer(session=session, reviewer_id=alice.id, review_id=given.id, now=later)
    assert last_answer(session=session, reviewer_id=alice.id, now=later) is None
    assert session.get(Review, given.id) is not None
