"""The model registry: which versions the catalog knows, which one is live, and how
one takes over from another (docs/rollout.md).

Like ``catalog.lifecycle``, each change is a keyword-only function with an explicit
``session``; the caller owns the transaction. A promote and a rollback are each
one transaction over ``model_versions``: the old live row becomes a candidate and
the new one live, and the partial unique index ``uq_model_versions_one_live``
makes two racing promotes fail rather than leave two live versions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from catalog.codes import ModelState
from catalog.models import (
    ClassificationJob,
    ModelVersion,
    Product,
    ProductPrediction,
    Review,
    ShadowPrediction,
    utcnow,
)


class RegistryError(ValueError):
    """A registry change that cannot be made as asked (the message says why)."""


@dataclass(frozen=True)
class Coverage:
    """How much of the catalog a version has classified: ``photos`` products have a
    photo; ``predicted`` of them have this version's row (``failed`` of those with an
    error code instead of a prediction)."""

    photos: int
    predicted: int
    failed: int

    @property
    def complete(self) -> bool:
        return self.predicted >= self.photos

    @property
    def share(self) -> float:
        return 1.0 if self.photos == 0 else self.predicted / self.photos


def get_version(*, session: Session, version: str) -> ModelVersion | None:
    return session.get(ModelVersion, version)


def live_version(*, session: Session) -> ModelVersion | None:
    """The version that answers uploads (``None``: none registered yet)."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.state == ModelState.LIVE.value)
    ).first()


def list_versions(*, session: Session) -> list[ModelVersion]:
    """Every registered version: the live one first, then the newest."""
    return list(
        session.scalars(
            select(ModelVersion).order_by(
                (ModelVersion.state == ModelState.LIVE.value).desc(),
                ModelVersion.created_at.desc(),
            )
        )
    )


def filled_versions(*, session: Session) -> list[str]:
    """The versions whose catalog predictions are kept up to date: live and candidates."""
    return list(
        session.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.state != ModelState.RETIRED.value)
            .order_by((ModelVersion.state == ModelState.LIVE.value).desc(), ModelVersion.version)
        )
    )


def register_version(
    *,
    session: Session,
    version: str,
    engine: str,
    artifact: str,
    card: dict[str, Any],
    live_if_none: bool = False,
) -> ModelVersion:
    """Register ``version`` as a candidate (a retired one comes back as a candidate);
    with ``live_if_none`` it becomes live when no version is. Registering a known
    version again changes nothing else."""
    row = get_version(session=session, version=version)
    if row is None:
        row = ModelVersion(
            version=version,
            engine=engine,
            artifact=artifact,
            card=card,
            state=ModelState.CANDIDATE.value,
            created_at=utcnow(),
        )
        session.add(row)
    elif row.state == ModelState.RETIRED.value:
        row.state, row.retired_at, row.indexed_at = ModelState.CANDIDATE.value, None, None
    no_live = live_version(session=session) is None
    if live_if_none and row.state != ModelState.LIVE.value and no_live:
        row.state, row.promoted_at, row.promoted_by = ModelState.LIVE.value, utcnow(), "first start"
    session.flush()
    return row


def coverage(*, session: Session, version: str) -> Coverage:
    photos, predicted, failed = session.execute(
        select(
            func.count(),
            func.count(ProductPrediction.product_id),
            func.count(ProductPrediction.error),
        )
        .select_from(Product)
        .outerjoin(
            ProductPrediction,
            (ProductPrediction.product_id == Product.id)
            & (ProductPrediction.model_version == version),
        )
        .where(Product.image_key.is_not(None))
    ).one()
    return Coverage(photos=photos, predicted=predicted, failed=failed)


def not_ready_reasons(*, session: Session, row: ModelVersion) -> list[str]:
    """Why ``row`` may not be promoted yet (empty: it may)."""
    reasons = []
    if row.state == ModelState.RETIRED.value:
        reasons.append(f"{row.version} is retired (stage it again)")
        return reasons
    covered = coverage(session=session, version=row.version)
    if not covered.complete:
        reasons.append(
            f"{row.version} has classified {covered.predicted} of {covered.photos} catalog "
            f"photos ({covered.share:.1%}); its fill is not finished"
        )
    if row.indexed_at is None:
        reasons.append(f"{row.version}'s similar-item indexes are not built yet")
    return reasons


def promote(*, session: Session, version: str, by: str, force: bool = False) -> ModelVersion:
    """Make ``version`` live and the live one a candidate (kept filled, for a rollback).

    Refused (``RegistryError``, saying why) while its catalog is not fully classified
    or its indexes are not built, unless ``force``: uploads would get fewer similar
    items than the live version gives.
    """
    row = session.get(ModelVersion, version, with_for_update=True)
    if row is None:
        raise RegistryError(f"no model version {version!r} is registered (fashion model list)")
    if row.state == ModelState.LIVE.value:
        return row
    reasons = not_ready_reasons(session=session, row=row)
    if row.state == ModelState.RETIRED.value or (reasons and not force):
        raise RegistryError("; ".join(reasons) + " (--force promotes anyway)")
    _make_live(session, row, by)
    return row


def rollback(*, session: Session, by: str) -> ModelVersion:
    """Make live again the version that was live before the current one (its
    predictions and indexes were kept); returns it."""
    previous = session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.state == ModelState.CANDIDATE.value,
            ModelVersion.promoted_at.is_not(None),
        )
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if previous is None:
        raise RegistryError("no version was live before this one: nothing to roll back to")
    _make_live(session, previous, by)
    return previous


def _make_live(session: Session, row: ModelVersion, by: str) -> None:
    current = session.scalars(
        select(ModelVersion).where(ModelVersion.state == ModelState.LIVE.value).with_for_update()
    ).first()
    if current is not None:
        current.state = ModelState.CANDIDATE.value
        session.flush()  # before the new live row: one live at a time (the unique index)
    row.state, row.promoted_at, row.promoted_by = ModelState.LIVE.value, utcnow(), by
    session.flush()


def retire(*, session: Session, version: str) -> int:
    """Mark ``version`` retired and delete its predictions; returns how many. Its
    indexes go with ``catalog.vector_indexes.drop_version_indexes`` (outside a
    transaction). The live version cannot be retired."""
    row = session.get(ModelVersion, version, with_for_update=True)
    if row is None:
        raise RegistryError(f"no model version {version!r} is registered (fashion model list)")
    if row.state == ModelState.LIVE.value:
        raise RegistryError(f"{version} is live: promote or roll back to another version first")
    deleted = session.execute(
        delete(ProductPrediction).where(ProductPrediction.model_version == version)
    ).rowcount
    row.state, row.retired_at, row.indexed_at = ModelState.RETIRED.value, utcnow(), None
    session.flush()
    return deleted


def mark_indexed(*, session: Session, version: str, dimensions: int | None) -> None:
    """``version``'s indexes are built (or, on SQLite, need none): it may be promoted."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise RegistryError(f"no model version {version!r} is registered")
    row.indexed_at, row.dimensions = utcnow(), dimensions
    session.flush()


def shadow_candidate(*, session: Session) -> ModelVersion | None:
    """The candidate uploads are compared with: the newest one never live (a version
    kept for a rollback is not under evaluation)."""
    return session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.state == ModelState.CANDIDATE.value,
            ModelVersion.promoted_at.is_(None),
        )
        .order_by(ModelVersion.created_at.desc())
        .limit(1)
    ).first()


def record_shadow(
    *,
    session: Session,
    job_id: uuid.UUID,
    model_version: str,
    label: int,
    confidence: float,
    uncertain: bool,
    similar_skus: list[str],
) -> None:
    session.merge(
        ShadowPrediction(
            job_id=job_id,
            model_version=model_version,
            label=label,
            confidence=confidence,
            uncertain=uncertain,
            similar_skus=similar_skus,
            created_at=utcnow(),
        )
    )


@dataclass(frozen=True)
class ShadowSummary:
    """A candidate against the live answers of the same uploads: how often their labels
    differ, how often each flagged ``uncertain``, and how often each agreed with the
    reviewers' answers (a category) on the uploads reviewers answered."""

    compared: int
    disagreements: int
    live_flagged: int
    shadow_flagged: int
    reviewed: int
    live_correct: int
    shadow_correct: int


def shadow_summary(*, session: Session, version: str) -> ShadowSummary:
    compared, disagreements, live_flagged, shadow_flagged = session.execute(
        select(
            func.count(),
            func.count().filter(ClassificationJob.label != ShadowPrediction.label),
            func.count().filter(ClassificationJob.uncertain.is_(True)),
            func.count().filter(ShadowPrediction.uncertain.is_(True)),
        )
        .select_from(ShadowPrediction)
        .join(ClassificationJob, ClassificationJob.id == ShadowPrediction.job_id)
        .where(ShadowPrediction.model_version == version)
    ).one()
    reviewed, live_correct, shadow_correct = session.execute(
        select(
            func.count(),
            func.count().filter(ClassificationJob.label == Review.label),
            func.count().filter(ShadowPrediction.label == Review.label),
        )
        .select_from(ShadowPrediction)
        .join(ClassificationJob, ClassificationJob.id == ShadowPrediction.job_id)
        .join(Review, Review.job_id == ShadowPrediction.job_id)
        .where(ShadowPrediction.model_version == version, Review.label.is_not(None))
    ).one()
    return ShadowSummary(
        compared,
        disagreements,
        live_flagged,
        shadow_flagged,
        reviewed,
        live_correct,
        shadow_correct,
    )
