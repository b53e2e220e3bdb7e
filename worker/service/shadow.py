"""Shadow comparison: a share of uploads is classified by the staged candidate too.

After the live answer of a micro-batch is committed and its webhooks are queued,
``FASHION_SHADOW_SHARE`` of its jobs (chosen by job id, so a redelivery picks the
same ones) are classified by the candidate under evaluation
(``catalog.versions.shadow_candidate``) from the inputs already in memory: no
fetch, no decode, one batched inference. Its label, confidence, flag and -- once
its catalog is filled and indexed -- its top similar SKUs are kept in
``shadow_predictions``; ``fashion model list`` compares them with the live
answers and with reviewers' answers. A failure here is logged and never touches
the job, which is already answered.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from catalog.db import get_sessionmaker
from catalog.similar import rank_similar
from catalog.versions import record_shadow, shadow_candidate
from worker.config import Settings
from worker.pipeline.preprocess import ModelInput
from worker.service.registry import classifier_for

log = logging.getLogger(__name__)


def picked(job_id: str, share: float) -> bool:
    """Whether ``job_id`` is in the shadowed share: its first 32 bits as a fraction."""
    return int(uuid.UUID(job_id).hex[:8], 16) < share * 2**32


def compare(settings: Settings, jobs: Sequence[tuple[str, ModelInput]], live: str) -> int:
    """Classify the shadowed share of ``jobs`` with the candidate; returns how many."""
    chosen = [(job_id, item) for job_id, item in jobs if picked(job_id, settings.shadow_share)]
    if not chosen:
        return 0
    sessions = get_sessionmaker(settings.resolved_database_url)
    try:
        with sessions() as session:
            candidate = shadow_candidate(session=session)
            if candidate is None or candidate.version == live:
                return 0
            version, searchable = candidate.version, candidate.indexed_at is not None
        predictions = classifier_for(settings, version).classify([item for _, item in chosen])
        with sessions.begin() as session:
            for (job_id, _), prediction in zip(chosen, predictions, strict=True):
                ranked = (
                    rank_similar(
                        session=session,
                        probabilities=prediction.probabilities,
                        embedding=prediction.embedding,
                        model_version=version,
                        uncertain=prediction.uncertain,
                        top_k=settings.similar_top_k,
                        ef_search=settings.similar_ef_search,
                        family=prediction.family if prediction.family_only else None,
                    )
                    if searchable
                    else []
                )
                record_shadow(
                    session=session,
                    job_id=uuid.UUID(job_id),
                    model_version=version,
                    label=prediction.label,
                    confidence=prediction.confidence,
                    uncertain=prediction.uncertain,
                    similar_skus=[product.sku for product, _ in ranked],
                )
    except Exception:  # the answer is out already: nothing here may reach the job
        log.warning("shadow comparison of %d job(s) failed", len(chosen), exc_info=True)
        return 0
    return len(chosen)
