"""The shapes callers see, spelled once: an upload's result, a similar item, a model version.

The Python client (``worker.client``), the HTTP API (each route's ``response_model``,
so ``/openapi.json`` types every answer), the webhook body and the CLI's ``--json``
all build and print these; none spells a field of its own. They live in the
catalog, below the client and the service, because they are read from its rows.

A job's error and its similar items are dicts (``TypedDict``), as Python callers
have always read them (``result.error["code"]``). One name differs by audience, on
purpose and in one place: a job's id is
``job_id`` to Python (``JobResult.job_id``, ``model_dump()``) and ``id`` over HTTP
and in webhooks (``model_dump(by_alias=True)``, what FastAPI sends).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from catalog.codes import TERMINAL_STATUSES, JobStatus, ModelState
from catalog.models import ClassificationJob, as_utc
from catalog.queries import similar_for_job
from catalog.versions import coverage, list_versions, shadow_summary


class _Shape(BaseModel):
    # Every field is in every answer (defaults included), so the schema of an answer
    # says each is required: a generated client types ``similar`` as a list, not
    # "a list or missing".
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)


class SimilarItem(TypedDict):
    """A catalog product like the photo, best first (a dict to Python callers)."""

    rank: Annotated[int, Field(ge=1, description="1 is the most similar.")]
    sku: str
    name: str
    score: Annotated[float, Field(description="Cosine similarity of the embeddings.")]
    in_stock: bool


class JobError(TypedDict):
    """Why a job ended ``failed``: a code from the README's table and a sentence."""

    code: str
    message: str


class JobResult(_Shape):
    """An upload's job: its state and, once done, its label and similar in-stock items."""

    job_id: str = Field(serialization_alias="id", description="The job's id (a UUID).")
    status: JobStatus
    label: int | None = Field(None, description="Fashion-MNIST class index, 0-9.")
    name: str | None = Field(None, description="The class's name, e.g. 'Trouser'.")
    confidence: float | None = Field(None, description="Calibrated probability of `label`.")
    uncertain: bool | None = Field(None, description="Too unsure to show without review.")
    family: str | None = Field(None, description="The label's family (e.g. 'footwear').")
    model_version: str | None = None
    error: JobError | None = None
    similar: list[SimilarItem] = Field(default_factory=list)
    created_at: str | None = Field(None, description="ISO 8601, UTC.")
    finished_at: str | None = Field(None, description="ISO 8601, UTC.")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, answer: Mapping[str, Any]) -> JobResult:
        """A job from its JSON by alias (what the API sends and a notice carries)."""
        return cls.model_validate({**answer, "job_id": answer["id"]})


class Accepted(_Shape):
    """An upload accepted and queued (202): poll its ``Location`` or wait for the webhook."""

    id: str
    status: JobStatus


class ProductSimilar(_Shape):
    """In-stock products like a catalog product's photo."""

    sku: str
    similar: list[SimilarItem]


def job_result(*, session: Session, job: ClassificationJob) -> JobResult:
    """``job`` as callers see it, with its similar items."""
    return job_answer(
        job,
        [
            SimilarItem(
                rank=item.rank,
                sku=item.sku,
                name=item.name,
                score=item.score,
                in_stock=item.in_stock,
            )
            for item in similar_for_job(session=session, job_id=job.id) or []
        ],
    )


def job_answer(job: ClassificationJob, similar: list[SimilarItem]) -> JobResult:
    """``job`` as callers see it, with ``similar`` (``job_result`` reads them; a worker
    that just wrote them has them in hand, and announces this answer with the job's
    end: ``messages.announce_finished``)."""
    created_at, finished_at = (
        None if moment is None else as_utc(moment).isoformat()
        for moment in (job.created_at, job.finished_at)
    )
    failed = job.status == JobStatus.FAILED
    return JobResult(
        job_id=str(job.id),
        status=job.status,
        label=job.label,
        name=job.label_name,
        confidence=job.confidence,
        uncertain=job.uncertain,
        family=job.family,
        model_version=job.model_version,
        error=JobError(code=job.error_code, message=job.error_message) if failed else None,
        similar=similar,
        created_at=created_at,
        finished_at=finished_at,
    )


class ShadowComparison(_Shape):
    """A candidate against the live answers of the same uploads (``FASHION_SHADOW_SHARE``
    of them): the evidence for a promote."""

    compared: int = Field(description="Uploads the candidate classified too.")
    disagreement: float | None = Field(None, description="Share whose labels differ.")
    live_flag_rate: float | None = Field(None, description="Share the live model flagged.")
    candidate_flag_rate: float | None = Field(None, description="Share the candidate flagged.")
    reviewed: int = Field(description="Of them, answered with a category by reviewers.")
    live_accuracy: float | None = Field(None, description="Live label = reviewers' answer.")
    candidate_accuracy: float | None = Field(None, description="Candidate's = reviewers'.")


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def shadow_comparison(*, session: Session, version: str) -> ShadowComparison:
    seen = shadow_summary(session=session, version=version)
    return ShadowComparison(
        compared=seen.compared,
        disagreement=_share(seen.disagreements, seen.compared),
        live_flag_rate=_share(seen.live_flagged, seen.compared),
        candidate_flag_rate=_share(seen.shadow_flagged, seen.compared),
        reviewed=seen.reviewed,
        live_accuracy=_share(seen.live_correct, seen.reviewed),
        candidate_accuracy=_share(seen.shadow_correct, seen.reviewed),
    )


class ModelVersionPublic(_Shape):
    """A registered model version as ``GET /v1/models`` and ``fashion model list`` show it."""

    version: str
    state: ModelState = Field(description="candidate, live (answers uploads) or retired.")
    engine: str = Field(description="Which artifact runs: float, dynamic or int8.")
    test_accuracy: float | None = Field(None, description="On Fashion-MNIST's test set (card).")
    catalog_photos: int = Field(description="Catalog products with a photo.")
    predicted: int = Field(description="Of them, classified by this version.")
    failed: int = Field(description="Of those, with an error code instead of a prediction.")
    coverage: float = Field(description="predicted / catalog_photos.")
    indexed: bool = Field(description="Its similar-item indexes are built: it may be promoted.")
    created_at: dt.datetime
    promoted_at: dt.datetime | None = Field(None, description="When it last became live.")
    promoted_by: str | None = None
    shadow: ShadowComparison | None = Field(
        None, description="A candidate never live: how it compares on uploads (shadowed)."
    )
    engine_timings: dict[str, dict[str, float | bool]] | None = Field(
        None, description="Images/s of each engine on the host that staged it, and its parity."
    )


def model_versions(*, session: Session) -> list[ModelVersionPublic]:
    """Every registered version, the live one first, with its catalog coverage."""
    shown = []
    for row in list_versions(session=session):
        covered = coverage(session=session, version=row.version)
        shown.append(
            ModelVersionPublic(
                version=row.version,
                state=ModelState(row.state),
                engine=row.engine,
                test_accuracy=row.card.get("test_accuracy"),
                catalog_photos=covered.photos,
                predicted=covered.predicted,
                failed=covered.failed,
                coverage=round(covered.share, 4),
                indexed=row.indexed_at is not None,
                created_at=as_utc(row.created_at),
                promoted_at=None if row.promoted_at is None else as_utc(row.promoted_at),
                promoted_by=row.promoted_by,
                shadow=(
                    shadow_comparison(session=session, version=row.version)
                    if row.state == ModelState.CANDIDATE and row.promoted_at is None
                    else None
                ),
                engine_timings=row.engine_timings,
            )
        )
    return shown
