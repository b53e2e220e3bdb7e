"""Rolling out a model version: stage → fill → index → promote, rollback, retire.

The operator's steps (``fashion model …``, docs/rollout.md), over the registry
(``catalog.versions``) and the bulk queue:

- ``stage`` registers a candidate from a model file and its card, copies the
  artifact to the object store (``models/<version>/``) and queues its fill: every
  catalog photo classified from its kept model input, on the bulk queue, writing
  only the candidate's rows. Uploads keep being answered by the live version.
- ``index_when_filled`` builds a version's similar-item indexes once its fill is
  complete (beat's model check calls it; ``stage --wait`` too).
- ``promote``, ``rollback`` and ``retire`` change the registry in one transaction;
  workers see it within ``FASHION_MODEL_REFRESH_SECONDS``.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalog import versions
from catalog.codes import ModelState, ReclassifyMode
from catalog.db import get_engine, get_sessionmaker
from catalog.vector_indexes import (
    build_version_indexes,
    drop_version_indexes,
    version_dimensions,
)
from worker.config import Settings
from worker.pipeline.classifier import Classifier, ModelError, engines_of, read_card
from worker.service.messages import DEFAULT_CHUNK_SIZE
from worker.service.reclassify import start_run
from worker.service.registry import (
    ModelFiles,
    live_version_name,
    upload_artifact,
)

#: What a version tag may be: it names a folder of the store and of the data dir.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: A quantized engine may serve only within these of the float model on the card's
#: validation images (the shipped model's: dynamic -0.02 points and 99.92 %
#: agreement, int8 -0.18 points and 99.74 %).
MAX_ACCURACY_DROP = 0.005
MIN_TOP1_AGREEMENT = 0.99
#: Engines are timed on a batch the size of a bulk chunk, interleaved, median of rounds.
TIMING_BATCH = 64
TIMING_ROUNDS = 15


@dataclass(frozen=True)
class Staged:
    version: str
    engine: str
    run_id: int
    queued: int
    #: Each engine's images/s here and its parity (``None``: ``--engine`` was given).
    engine_timings: dict[str, dict[str, Any]] | None = None


def within_parity(card: dict[str, Any], engine: str) -> bool:
    """Whether ``engine`` keeps the card's float accuracy (``MAX_ACCURACY_DROP``) and
    answers (``MIN_TOP1_AGREEMENT``) on its validation images; float always does."""
    if engine == "float":
        return True
    checked = card.get(engine, {}).get("validation", {})
    float_accuracy = checked.get("float_accuracy")
    accuracy = checked.get(f"{engine}_accuracy")
    agreement = checked.get("top1_agreement")
    if None in (float_accuracy, accuracy, agreement):
        return False
    return float_accuracy - accuracy <= MAX_ACCURACY_DROP and agreement >= MIN_TOP1_AGREEMENT


def time_engines(path: Path) -> dict[str, dict[str, Any]]:
    """Images/s of each engine of the model at ``path`` on this host (batch
    ``TIMING_BATCH``, ``TIMING_ROUNDS`` interleaved rounds, median), with its parity.
    The fastest engine differs by CPU: on an AVX2-only host float was the fastest of
    the shipped model's three, on an AVX-512 VNNI host dynamic was 3.1× float."""
    card = read_card(path)
    classifiers = {engine: Classifier(path, engine=engine) for engine in engines_of(path)}
    images = np.random.default_rng(0).random((TIMING_BATCH, 28, 28, 1), dtype=np.float32)
    seconds: dict[str, list[float]] = {engine: [] for engine in classifiers}
    for classifier in classifiers.values():
        classifier.run(images)  # warm-up
    for _ in range(TIMING_ROUNDS):
        for engine, classifier in classifiers.items():
            started = time.perf_counter()
            classifier.run(images)
            seconds[engine].append(time.perf_counter() - started)
    return {
        engine: {
            "images_per_s": round(TIMING_BATCH / statistics.median(times), 1),
            "parity": within_parity(card, engine),
        }
        for engine, times in seconds.items()
    }


def fastest_engine(timings: dict[str, dict[str, Any]]) -> str:
    """The fastest engine within parity (float is always within)."""
    eligible = {engine: figures for engine, figures in timings.items() if figures["parity"]}
    return max(eligible, key=lambda engine: eligible[engine]["images_per_s"])


def stage(
    settings: Settings,
    path: Path,
    *,
    engine: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Staged:
    """Register the model at ``path`` (a ``.tflite`` with ``model_card.json`` beside
    it) as a candidate and queue its fill; the model is loaded here, so a file that
    does not match its card is refused before anything is registered.

    Without ``engine``, each engine is timed on this host (``time_engines``) and the
    fastest within the card's parity bounds is staged.
    """
    timings = None if engine is not None else time_engines(path)
    classifier = Classifier(path, engine=engine or fastest_engine(timings))
    if not VERSION_PATTERN.fullmatch(classifier.version):
        raise ModelError(
            f"version {classifier.version!r} is not a valid tag ({VERSION_PATTERN.pattern})"
        )
    live_version_name(settings)  # the configured model registers first: it stays live
    files = ModelFiles(classifier.version, classifier.engine, classifier.card, path)
    artifact = upload_artifact(settings, files)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        row = versions.register_version(
            session=session,
            version=files.version,
            engine=files.engine,
            artifact=artifact,
            card=files.card,
        )
        if row.state == ModelState.LIVE.value:
            raise versions.RegistryError(f"{files.version} is already live")
        if timings is not None:
            row.engine_timings = timings
    run = start_run(
        ReclassifyMode.STALE,
        settings=settings,
        chunk_size=chunk_size,
        trigger="stage",
        version=files.version,
    )
    return Staged(files.version, files.engine, run.id, run.total, timings)


def index_when_filled(settings: Settings, version: str) -> bool:
    """Build ``version``'s indexes if its fill is complete (the live version's as soon
    as it has embeddings: uploads search it); returns whether it is indexed now."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        row = versions.get_version(session=session, version=version)
        if row is None or row.state == ModelState.RETIRED.value:
            return False
        if row.indexed_at is not None:
            return True
        covered = versions.coverage(session=session, version=version)
        dimensions = version_dimensions(session.connection(), version)
        live = row.state == ModelState.LIVE.value
    if not covered.complete and not (live and dimensions):
        return False
    if dimensions is not None:
        build_version_indexes(get_engine(settings.resolved_database_url), version, dimensions)
    with sessions.begin() as session:
        versions.mark_indexed(session=session, version=version, dimensions=dimensions)
    return True


def index_filled_versions(settings: Settings) -> list[str]:
    """``index_when_filled`` for every live and candidate version not indexed yet;
    returns those indexed now."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        pending = [
            row.version
            for row in versions.list_versions(session=session)
            if row.state != ModelState.RETIRED.value and row.indexed_at is None
        ]
    return [version for version in pending if index_when_filled(settings, version)]


def promote(settings: Settings, version: str, *, by: str, force: bool = False) -> str:
    """Make ``version`` live (refused while its fill or indexes are missing, unless
    ``force``); returns the version that was live before."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        before = versions.live_version(session=session)
        versions.promote(session=session, version=version, by=by, force=force)
        return "" if before is None else before.version


def rollback(settings: Settings, *, by: str) -> str:
    """Make the previous live version live again; returns it."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        return versions.rollback(session=session, by=by).version


def retire(settings: Settings, version: str) -> int:
    """Retire ``version``: its predictions and indexes are dropped; returns how many rows."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        deleted = versions.retire(session=session, version=version)
    drop_version_indexes(get_engine(settings.resolved_database_url), version)
    return deleted
