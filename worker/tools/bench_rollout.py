"""``fashion bench``'s rollout figures: a candidate's fill, its indexes, a promote.

A candidate is the bundled model under another engine than the live one: a
version of its own, whose fill takes the path any new model takes (the catalog's
kept inputs, the bulk queue, only its own rows, no search graph written). The
first is the fastest other engine on this host, as ``fashion model stage`` would
choose (float on an AVX2-only CPU, int8 on one with AVX-512 VNNI); the second,
filled while uploads are measured, is the remaining one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from catalog.db import get_sessionmaker
from catalog.models import ProductPrediction
from catalog.versions import promote
from worker import client
from worker.config import Settings
from worker.pipeline.classifier import engine_version, model_path, read_card
from worker.service.reclassify import run_progress
from worker.service.registry import live_version_name
from worker.service.rollout import index_when_filled, stage, time_engines
from worker.tools.harness import wait_until


@dataclass(frozen=True)
class Fill:
    version: str
    run_id: int
    total: int
    started: dt.datetime


def start_fill(settings: Settings, engine: str, chunk: int) -> Fill:
    """Stage the bundled model's ``engine`` as a candidate: its fill is queued."""
    started = dt.datetime.now(dt.UTC)
    staged = stage(settings, model_path(settings), engine=engine, chunk_size=chunk)
    return Fill(staged.version, staged.run_id, staged.queued, started)


def fill_finished(settings: Settings, fill: Fill) -> bool:
    return run_progress(settings, fill.run_id).finished


def wait_for_fill(settings: Settings, fill: Fill) -> None:
    wait_until(lambda: fill_finished(settings, fill), 3600, f"the fill of {fill.version}")


def last_classified(settings: Settings) -> dt.datetime:
    """When the catalog's latest prediction (of any version) was written."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(select(func.max(ProductPrediction.classified_at)))


def fill_rate(settings: Settings, fill: Fill) -> float:
    """Images per second of a finished fill, from its staging to its last write."""
    return fill.total / (last_classified(settings) - fill.started).total_seconds()


def fill_under_load(
    settings: Settings,
    engine: str,
    chunk: int,
    measure: Callable[[Callable[[], bool]], list[float]],
) -> tuple[list[float], float]:
    """Stage ``engine`` and ``measure`` uploads while its fill is not 90 % done;
    returns their latencies and the fill's rate meanwhile."""
    fill = start_fill(settings, engine, chunk)
    busy = measure(lambda: run_progress(settings, fill.run_id).done < 0.9 * fill.total)
    wait_for_fill(settings, fill)
    return busy, fill_rate(settings, fill)


def index_seconds(settings: Settings, version: str) -> float:
    """How long building ``version``'s ten partial HNSW graphs takes, its fill complete."""
    started = time.perf_counter()
    if not index_when_filled(settings, version):
        raise RuntimeError(f"{version}'s fill is not complete: no indexes built")
    return time.perf_counter() - started


def candidate_engines(settings: Settings) -> list[str]:
    """The bundled model's engines other than the live one, within parity, fastest
    first on this host."""
    live = live_version_name(settings)
    card = read_card(model_path(settings))
    timings = time_engines(model_path(settings))
    others = [
        engine
        for engine, timed in timings.items()
        if timed["parity"] and engine_version(card, engine)[1] != live
    ]
    if len(others) < 2:
        raise RuntimeError(f"the bundled model needs two engines besides the live {live}")
    return sorted(others, key=lambda engine: -timings[engine]["images_per_s"])


def first_candidate(settings: Settings, engine: str, chunk: int) -> tuple[float, Fill, float]:
    """After the live version's first fill: its indexes' build seconds; then a
    candidate (``engine``) staged and filled, and its images per second."""
    live_index_s = index_seconds(settings, live_version_name(settings))
    fill = start_fill(settings, engine, chunk)
    wait_for_fill(settings, fill)
    return live_index_s, fill, fill_rate(settings, fill)


def promote_candidate(settings: Settings, fill: Fill, upload: bytes) -> tuple[float, float]:
    """Index ``fill``'s version and promote it: the build seconds, and the seconds
    from the promote to the first upload answered by it."""
    built = index_seconds(settings, fill.version)
    return built, promote_visible_seconds(settings, fill.version, upload)


def promote_visible_seconds(settings: Settings, version: str, upload: bytes) -> float:
    """From the promote's commit to the first upload answered by ``version`` (uploads
    sent one after another, each waited for)."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        promote(session=session, version=version, by="bench")
    promoted = time.perf_counter()
    deadline = promoted + 120
    while time.perf_counter() < deadline:
        job_id = client.submit(upload, "bench.jpg", settings=settings)
        job = client.wait([job_id], timeout=30, settings=settings)[job_id]
        if job is not None and job.model_version == version:
            if not job.similar:
                raise RuntimeError(f"{version} answered an upload with no similar items")
            return time.perf_counter() - promoted
    raise RuntimeError(f"no upload was answered by {version} within 120 s of its promote")
