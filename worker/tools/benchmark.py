"""``fashion bench``: end-to-end throughput and latency against the real services.

A throw-away catalog (its own database, bucket and queues, removed afterwards),
real ``celery worker`` processes, and, in order:

1. the naive baseline (``worker.tools.naive``): one task per image, Keras ``predict``;
2. ours, bulk: ``reclassify`` of the catalog from the photos
   (``bulk_first_time_images_per_s``, also ``bulk_images_per_s``), then its
   indexes (``index_build_s``); a new version's fill (``fashion model stage`` of the
   bundled model's fastest other engine here: kept inputs, no fetch, no decode):
   ``bulk_new_model_images_per_s``, which ``bulk_speedup`` divides by the naive
   rate; a nightly ``changed`` run over the unchanged catalog
   (``nightly_unchanged_s``: listing + catalog scan, nothing queued);
3. interactive latency, upload stored → result row committed (``created_at`` →
   ``finished_at``), one upload at a time on an idle worker, and the median of each
   of its stages (``interactive_stages_ms``: the jobs' ``timings``); then through
   the HTTP API (``POST /v1/classifications?wait=10``, as the caller sees it:
   ``api_idle_ms``) alternating with ``client.submit`` + ``client.wait`` (both woken
   by the worker's notice), so ``api_overhead_ms`` (p50 API − p50 direct) is what
   HTTP adds;
4. the same while a second candidate (the remaining engine) fills
   (``interactive_during_fill_ms``, also ``interactive_under_load_ms``); then the
   first candidate's indexes are built and it is promoted: ``promote_visible_s``
   is the time from the promote's commit to the first upload answered by it;
5. inference alone (``Classifier.predict`` on a chunk, as the bulk task calls
   it) against the bare LiteRT signature runner at the same batch size;
6. peak RSS (``VmHWM``) of every worker process, and the bulk workers' RSS
   before and after the run (flat = no leak). Images/s: wall clock, enqueue
   included. Linux only (``/proc``).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sqlalchemy import func, select

from catalog.codes import JOB_STAGES, JobStatus
from catalog.db import get_sessionmaker, upgrade
from catalog.models import ClassificationJob, ProductPrediction
from worker import client
from worker.config import Settings
from worker.pipeline.classifier import Classifier, model_path
from worker.pipeline.preprocess import normalize
from worker.service.celery_app import WORKER_APP, make_celery
from worker.service.reclassify import run_progress, start_run
from worker.storage import get_store
from worker.tools import bench_rollout as rollout
from worker.tools.bench_api import measure_api, measure_api_capacity
from worker.tools.bench_inference import measure_engines, sample_batch
from worker.tools.bench_tracing import measure_tracing
from worker.tools.harness import (
    SAMPLES,
    Log,
    WorkerProcess,
    build_catalog,
    pgvector_server,
    s3_server,
    throwaway_database,
    wait_until,
)
from worker.tools.naive import NAIVE_TASK, NAIVE_VERSION


@dataclass(frozen=True)
class BenchConfig:
    images: int = 5000
    naive_images: int = 300
    interactive: int = 200
    #: Seconds at each arrival rate of the API's capacity steps (``bench_capacity``).
    capacity_step_s: float = 4.0
    chunk: int = 64
    concurrency: int = 2
    #: A PostgreSQL with pgvector; ``None``: start one (``harness.pgvector_server``).
    postgres_admin_url: str | None = None
    #: For the PostgreSQL it starts: the similar-item indexes in memory, as compose does.
    shared_buffers: str = "2GB"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str | None = None
    s3rver: str | None = None


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) and the sample count."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "n": 0}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q * len(ordered))) - 1))]

    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(rank(0.95), 1),
        "p99": round(rank(0.99), 1),
        "n": len(ordered),
    }


# -- measurements ------------------------------------------------------------------------


def _count_classified(settings: Settings, version: str, ids: list[int]) -> int:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(
            select(func.count()).where(
                ProductPrediction.model_version == version, ProductPrediction.product_id.in_(ids)
            )
        )


def measure_naive(
    settings: Settings, ids: list[int], config: BenchConfig, workdir: Path, log: Log
) -> tuple[float, list[float]]:
    sender = make_celery(settings)
    queue = f"bench-naive-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        settings,
        app="worker.tools.naive",
        queue=queue,
        concurrency=config.concurrency,
        log_path=workdir / "naive-worker.log",
    )
    try:
        warm = ids[: 2 * config.concurrency]
        timed = ids[len(warm) : len(warm) + config.naive_images]
        for product_id in warm:
            sender.send_task(NAIVE_TASK, args=[product_id], queue=queue)
        wait_until(
            lambda: _count_classified(settings, NAIVE_VERSION, warm) == len(warm),
            180,
            "the naive worker to start (TensorFlow import)",
        )
        started = dt.datetime.now(dt.UTC)
        for product_id in timed:
            sender.send_task(NAIVE_TASK, args=[product_id], queue=queue)
        wait_until(
            lambda: _count_classified(settings, NAIVE_VERSION, timed) == len(timed),
            600,
            "the naive baseline",
        )
        seconds = (rollout.last_classified(settings) - started).total_seconds()
        rss = worker.memory_mb("VmHWM")
    finally:
        worker.stop()
        redis.Redis.from_url(settings.resolved_broker_url).delete(queue)
    rate = len(timed) / seconds
    log(f"naive: {len(timed)} images in {seconds:.1f} s = {rate:.1f} images/s")
    return rate, rss


def _run_bulk(
    settings: Settings, config: BenchConfig, mode: str, worker: WorkerProcess
) -> tuple[int, float, list[dict]]:
    """Run a bulk re-classification to the end; RSS of the pool is sampled every ~10 %."""
    started = dt.datetime.now(dt.UTC)
    run = start_run(mode, settings=settings, chunk_size=config.chunk, trigger="bench")
    samples = [{"done": 0, "rss_mb": worker.memory_mb("VmRSS")}]
    deadline = time.monotonic() + 3600
    while not (progress := run_progress(settings, run.id)).finished:
        if time.monotonic() > deadline:
            raise RuntimeError(f"bulk run {run.id} did not finish within an hour")
        if progress.done >= samples[-1]["done"] + max(1, run.total // 10):
            samples.append({"done": progress.done, "rss_mb": worker.memory_mb("VmRSS")})
        time.sleep(0.05)
    samples.append({"done": run.total, "rss_mb": worker.memory_mb("VmRSS")})
    return run.total, (rollout.last_classified(settings) - started).total_seconds(), samples


def _run_nightly_unchanged(settings: Settings, config: BenchConfig) -> tuple[float, int]:
    """A nightly ``changed`` run over the catalog just classified: seconds from the
    start (bucket listing, catalog scan) to the run being finished, and how many
    products it queued (0 when nothing changed)."""
    started = time.perf_counter()
    run = start_run("changed", settings=settings, chunk_size=config.chunk, trigger="bench")
    wait_until(lambda: run_progress(settings, run.id).finished, 3600, "the nightly run")
    return time.perf_counter() - started, run.total


def measure_interactive(
    settings: Settings, uploads: list[bytes], count: int, *, gap: float, while_running=None
) -> tuple[list[float], list[dict[str, float]]]:
    """Submit ``count`` uploads ``gap`` seconds apart; their latencies in ms from the
    job rows (created → finished), and each one's stages (``timings``).

    ``while_running`` (a callable) stops submission once it returns False.
    """
    job_ids = []
    for index in range(count):
        if while_running is not None and not while_running():
            break
        job_ids.append(client.submit(uploads[index % len(uploads)], "bench.jpg", settings=settings))
        if while_running is None:
            client.wait([job_ids[-1]], timeout=60, settings=settings)
        time.sleep(gap)
    results = client.wait(job_ids, timeout=120, settings=settings)
    if not all(job and job.status == JobStatus.DONE for job in results.values()):
        raise RuntimeError("an interactive benchmark job did not end 'done'")
    with get_sessionmaker(settings.resolved_database_url)() as session:
        rows = session.execute(
            select(
                ClassificationJob.created_at,
                ClassificationJob.finished_at,
                ClassificationJob.timings,
            ).where(ClassificationJob.id.in_([uuid.UUID(j) for j in job_ids]))
        ).all()
    latencies = [(finished - created).total_seconds() * 1000 for created, finished, _ in rows]
    return latencies, [timings for _, _, timings in rows if timings]


def stage_medians(timings: list[dict[str, float]]) -> dict[str, float]:
    """The median ms of each stage (``catalog.codes.JOB_STAGES``) and their sum."""
    medians = {
        stage: round(statistics.median(job[stage] for job in timings), 2) for stage in JOB_STAGES
    }
    return {**medians, "sum_of_medians": round(sum(medians.values()), 2)}


def measure_inference(settings: Settings, batch: int, rounds: int = 200) -> dict[str, float]:
    """``Classifier.predict`` as the bulk task calls it vs the bare signature runner."""
    from ai_edge_litert.interpreter import Interpreter

    pixels = sample_batch(batch)
    classifier = Classifier(
        model_path(settings), num_threads=settings.inference_threads, engine=settings.model_engine
    )
    interpreter = Interpreter(
        model_content=classifier.path.read_bytes(), num_threads=settings.inference_threads
    )
    runner = interpreter.get_signature_runner("serving_default")
    ready = np.ascontiguousarray(normalize(pixels), dtype=np.float32)
    ours, raw = [], []
    for _ in range(5):
        classifier.predict(normalize(pixels))
        runner(image=ready)
    for _ in range(rounds):
        start = time.perf_counter()
        classifier.predict(normalize(pixels))
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        runner(image=ready)
        raw.append(time.perf_counter() - start)
    return {
        "inference_images_per_s": round(batch / statistics.median(ours), 1),
        "engine_images_per_s": round(batch / statistics.median(raw), 1),
    }


def run_benchmark(config: BenchConfig, *, log: Log) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("keras") is None:
        raise RuntimeError("the naive baseline runs Keras: pip install '.[train]'")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fashion-bench-")))
        settings = _bench_services(stack, workdir, config, log)
        ids = build_catalog(settings, config.images, log)
        uploads = [path.read_bytes() for path in sorted((SAMPLES / "uploads").glob("*.jpg"))]

        naive_rate, naive_rss = measure_naive(settings, ids, config, workdir, log)

        bulk = _worker(stack, settings, settings.bulk_queue, config.concurrency, workdir)
        wait_until(lambda: len(bulk.children()) == config.concurrency, 60, "the bulk worker")
        time.sleep(1.0)  # model loaded in worker_process_init
        total, seconds, rss_samples = _run_bulk(settings, config, "stale", bulk)
        bulk_rate = total / seconds
        log(f"bulk, first time: {total} images in {seconds:.1f} s = {bulk_rate:.0f} images/s")
        engines_here = rollout.candidate_engines(settings)
        index_build_s, candidate, new_model_rate = rollout.first_candidate(
            settings, engines_here[0], config.chunk
        )
        log(f"live indexes {index_build_s:.2f} s; candidate fill {new_model_rate:.0f} images/s")
        nightly_seconds, nightly_queued = _run_nightly_unchanged(settings, config)
        log(f"nightly over the unchanged catalog: {nightly_seconds:.2f} s, {nightly_queued} queued")

        interactive = _worker(stack, settings, settings.interactive_queue, 1, workdir)
        latency = _measure_latency(settings, uploads, config, workdir, log)

        busy, loaded_rate = rollout.fill_under_load(
            settings,
            engines_here[1],
            config.chunk,
            lambda running: measure_interactive(
                settings, uploads, config.interactive, gap=0.05, while_running=running
            )[0],
        )
        log(f"interactive, during a fill: {percentiles(busy)}; fill meanwhile {loaded_rate:.0f}/s")
        candidate_index_s, visible = rollout.promote_candidate(settings, candidate, uploads[0])
        log(f"candidate indexed in {candidate_index_s:.2f} s; promote visible in {visible:.2f} s")

        engine = measure_inference(settings, config.chunk)
        engines = measure_engines({"model": model_path(settings)}, batch=config.chunk)
        log(f"inference per engine: {engines['engines']}")
        rss_peak = {
            "naive": naive_rss,
            "bulk": bulk.memory_mb("VmHWM"),
            "interactive": interactive.memory_mb("VmHWM"),
        }
        ratio = engine["inference_images_per_s"] / engine["engine_images_per_s"]
        return {
            "naive_images_per_s": round(naive_rate, 1),
            "bulk_images_per_s": round(bulk_rate, 1),
            "bulk_first_time_images_per_s": round(bulk_rate, 1),
            "bulk_new_model_images_per_s": round(new_model_rate, 1),
            "bulk_speedup": round(new_model_rate / naive_rate, 1),
            "nightly_unchanged_s": round(nightly_seconds, 2),
            "nightly_unchanged_queued": nightly_queued,
            "interactive_under_load_ms": percentiles(busy),
            "interactive_during_fill_ms": percentiles(busy),
            "index_build_s": round(index_build_s, 2),
            "candidate_index_build_s": round(candidate_index_s, 2),
            "promote_visible_s": round(visible, 2),
            "candidate_engines": engines_here,
            **latency,
            "bulk_images_per_s_while_interactive": round(loaded_rate, 1),
            **engine,
            "inference_vs_engine": round(ratio, 3),
            "engines": engines["engines"],
            "worker_rss_mb": {
                "peak": rss_peak,
                "max_per_process_ours": max(rss_peak["bulk"] + rss_peak["interactive"]),
                "bulk_during_run": rss_samples,
            },
            "config": _config_figures(config, settings),
        }


def _measure_latency(
    settings: Settings, uploads: list[bytes], config: BenchConfig, workdir: Path, log: Log
) -> dict[str, Any]:
    """One upload at a time on the idle interactive worker: server side and by stage,
    through the HTTP API beside the direct path, what tracing costs, then the API's
    open-loop capacity; their figures."""
    measure_interactive(settings, uploads, 10, gap=0.0)  # warm-up: connections, caches
    idle, idle_timings = measure_interactive(settings, uploads, config.interactive, gap=0.02)
    stages = stage_medians(idle_timings)
    log(f"interactive, idle: {percentiles(idle)}; p50 by stage: {stages}")
    api_ms, direct_ms = measure_api(settings, uploads, config.interactive, workdir)
    api_overhead = statistics.median(api_ms) - statistics.median(direct_ms)
    log(
        f"HTTP API, idle: {percentiles(api_ms)}; direct submit+wait: "
        f"{percentiles(direct_ms)}; overhead p50 {api_overhead:.1f} ms"
    )
    tracing = measure_tracing(
        settings,
        lambda variant, count: measure_interactive(variant, uploads, count, gap=0.02)[0],
        max(10, config.interactive // 2),
        workdir,
    )
    log(
        f"tracing: server-side p50 {tracing['tracing_interactive_p50_ms']} ms, "
        f"overhead {tracing['tracing_overhead_pct']} %"
    )
    capacity = measure_api_capacity(settings, uploads, workdir, config.capacity_step_s)
    log(
        f"HTTP API capacity: {capacity['api_capacity_uploads_per_s']}/s "
        f"({capacity['api_capacity_ms']}); steps {capacity['api_capacity_steps']}; "
        f"{capacity['api_capacity_lost']} of {capacity['api_capacity_accepted']} "
        "accepted lost"
    )
    return {
        "interactive_idle_ms": percentiles(idle),
        "interactive_stages_ms": stages,
        "api_idle_ms": percentiles(api_ms),
        "api_direct_ms": percentiles(direct_ms),
        "api_overhead_ms": round(api_overhead, 2),
        **tracing,
        **capacity,
    }


def _worker(
    stack: ExitStack, settings: Settings, queue: str, concurrency: int, workdir: Path
) -> WorkerProcess:
    """A worker process on ``queue``, stopped when ``stack`` closes."""
    process = WorkerProcess(
        settings,
        app=WORKER_APP,
        queue=queue,
        concurrency=concurrency,
        log_path=workdir / f"{queue}-worker.log",
    )
    stack.callback(process.stop)
    return process


def _bench_services(stack: ExitStack, workdir: Path, config: BenchConfig, log: Log) -> Settings:
    """The S3 server, a PostgreSQL with pgvector and a throw-away database, queues of
    the run's own on Redis: all removed when ``stack`` closes; their settings."""
    endpoint, credentials = stack.enter_context(
        s3_server(workdir, log, endpoint=config.s3_endpoint, s3rver=config.s3rver)
    )
    admin_url = config.postgres_admin_url or stack.enter_context(
        pgvector_server({"shared_buffers": config.shared_buffers})
    )
    database_url = stack.enter_context(throwaway_database(admin_url))
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=workdir / "data",
        database_url=database_url,
        broker_url=config.redis_url,
        storage_url=f"s3://fashion-bench-{suffix}/bench",
        s3_endpoint_url=endpoint,
        interactive_queue=f"bench-interactive-{suffix}",
        bulk_queue=f"bench-bulk-{suffix}",
        **credentials,
    )
    stack.callback(
        redis.Redis.from_url(config.redis_url).delete,
        settings.interactive_queue,
        settings.bulk_queue,
    )
    upgrade(database_url)
    get_store(settings).ensure_bucket()
    return settings


def _config_figures(config: BenchConfig, settings: Settings) -> dict[str, Any]:
    """What the figures were taken with, printed beside them."""
    return {
        "images": config.images,
        "naive_images": config.naive_images,
        "interactive": config.interactive,
        "chunk": config.chunk,
        "concurrency": config.concurrency,
        "fetch_threads": settings.fetch_threads,
        "shared_buffers": None if config.postgres_admin_url else config.shared_buffers,
        "s3_server": "given" if config.s3_endpoint else ("s3rver" if config.s3rver else "moto"),
        "model_version": Classifier(model_path(settings), engine=settings.model_engine).version,
        "cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
