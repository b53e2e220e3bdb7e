"""``fashion bench``: end-to-end throughput and latency against the real services.

One run builds a throw-away catalog (its own PostgreSQL database, S3 bucket and
Redis queue names, all removed afterwards), starts real ``celery worker``
processes and measures, in order:

1. the naive baseline (``worker.naive``): one task per image, Keras ``predict``;
2. ours, bulk: ``reclassify`` of the whole catalog through the bulk queue;
3. interactive latency, upload stored → result row committed (the job row's
   ``created_at`` → ``finished_at``), one upload at a time on an idle worker;
4. the same while a bulk run keeps the bulk worker busy;
5. inference alone (``Classifier.predict`` on a chunk, as the bulk task calls
   it) against the bare LiteRT signature runner at the same batch size;
6. peak RSS (``VmHWM``) of every worker process, and the bulk workers' RSS
   before and after the run (flat = no leak over the images it processed).

Images/s figures are wall-clock end to end, enqueue included. Linux only (RSS
is read from ``/proc``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis
from PIL import Image
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from catalog.codes import JobStatus
from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.models import CATEGORIES, ClassificationJob, Product
from worker import client
from worker.config import Settings
from worker.naive import NAIVE_TASK, NAIVE_VERSION
from worker.pipeline.classifier import Classifier, model_path
from worker.pipeline.preprocess import normalize, preprocess
from worker.service.celery_app import WORKER_APP, make_celery, worker_command, worker_environment
from worker.service.reclassify import run_progress, start_run
from worker.storage import get_store

SAMPLES = Path(__file__).parent / "samples"
#: Distinct photo objects; products beyond this share them (each is still a real GET).
MAX_DISTINCT_PHOTOS = 2000

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    images: int = 5000
    naive_images: int = 300
    interactive: int = 200
    chunk: int = 64
    concurrency: int = 2
    postgres_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
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


# -- processes ---------------------------------------------------------------------------


def _proc_status(pid: int, field: str) -> float | None:
    """A ``/proc/PID/status`` memory field in MB (``None`` once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class WorkerProcess:
    """A real ``celery worker`` (prefork) started for the benchmark, logs in ``log_path``."""

    def __init__(
        self,
        settings: Settings,
        *,
        app: str,
        queue: str,
        concurrency: int,
        log_path: Path,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            worker_command(
                settings,
                [queue],
                hostname=f"bench-{uuid.uuid4().hex[:6]}",
                concurrency=concurrency,
                app_path=app,
                loglevel="WARNING",
                extra=("--pool=prefork", "--without-heartbeat"),
            ),
            env=worker_environment(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def children(self) -> list[int]:
        return _children(self.process.pid)

    def memory_mb(self, field: str) -> list[float]:
        """``field`` (VmRSS, VmHWM) of each pool process, in MB."""
        values = [_proc_status(pid, field) for pid in self.children()]
        return [round(v, 1) for v in values if v is not None]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# -- set-up ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, *, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (or ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def _s3_server(config: BenchConfig, workdir: Path, log: Log) -> Iterator[tuple[str, dict]]:
    """The S3 endpoint and credentials: the given one, s3rver (Node) or moto (Python)."""
    if config.s3_endpoint:
        yield config.s3_endpoint, {}
        return
    port = free_port()
    if config.s3rver:
        command = [config.s3rver, "-d", str(workdir / "s3"), "-a", "127.0.0.1", "-p", str(port)]
        credentials = {"s3_access_key_id": "S3RVER", "s3_secret_access_key": "S3RVER"}
        command.append("--silent")
        name = "s3rver"
    else:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "fashion bench needs an S3-compatible server: pass --s3-endpoint or --s3rver, "
                "or install the dev extra (moto) to let it start one on 127.0.0.1"
            ) from exc
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        credentials = {"s3_access_key_id": "bench", "s3_secret_access_key": "bench"}
        name = "moto"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_for_port(port, process=process)
        except RuntimeError as exc:
            raise RuntimeError(f"{name} did not start: {exc}") from exc
        log(f"S3: {name} on 127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", credentials
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    name = f"fashion_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        yield rendered
    finally:
        get_engine(rendered).dispose()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _product_photos(count: int) -> tuple[list[bytes], list[str]]:
    """PNG product photos and their true categories: Fashion-MNIST training images
    when the dataset is installed, else the bundled sample product photos."""
    from training.data import DatasetNotFoundError, load_fashion_mnist

    try:
        dataset = load_fashion_mnist()
    except DatasetNotFoundError:
        with (SAMPLES / "catalog.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        photos = [(SAMPLES / row["image"]).read_bytes() for row in rows]
        return photos, [row["category"] for row in rows]
    photos, labels = [], []
    for image, label in zip(
        dataset.train_images[:count], dataset.train_labels[:count], strict=True
    ):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        photos.append(buffer.getvalue())
        labels.append(CATEGORIES[int(label)])
    return photos, labels


def build_catalog(settings: Settings, count: int, log: Log) -> list[int]:
    photos, labels = _product_photos(min(count, MAX_DISTINCT_PHOTOS))
    store = get_store(settings)
    keys = [f"catalog/{index}.png" for index in range(len(photos))]
    with ThreadPoolExecutor(settings.fetch_threads) as pool:
        list(pool.map(store.put, keys, photos))
    rows = [
        {
            "sku": f"BENCH-{index:07d}",
            "name": f"item {index}",
            "category": labels[index % len(photos)],
            "price": 10,
            "stock_quantity": 3,
            "image_key": keys[index % len(photos)],
        }
        for index in range(count)
    ]
    engine = get_engine(settings.resolved_database_url)
    with engine.begin() as connection:
        connection.execute(insert(Product), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE products")
    with get_sessionmaker(settings.resolved_database_url)() as session:
        ids = list(session.scalars(select(Product.id).order_by(Product.id)))
    log(f"catalog: {count} products over {len(photos)} distinct photos")
    return ids


# -- measurements ------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _count_classified(settings: Settings, version: str, ids: list[int]) -> int:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(
            select(func.count()).where(Product.model_version == version, Product.id.in_(ids))
        )


def _last_classified(settings: Settings) -> dt.datetime:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(select(func.max(Product.classified_at)))


def measure_naive(
    settings: Settings, ids: list[int], config: BenchConfig, workdir: Path, log: Log
) -> tuple[float, list[float]]:
    sender = make_celery(settings)
    queue = f"bench-naive-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        settings,
        app="worker.naive",
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
        seconds = (_last_classified(settings) - started).total_seconds()
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
    return run.total, (_last_classified(settings) - started).total_seconds(), samples


def measure_interactive(
    settings: Settings, uploads: list[bytes], count: int, *, gap: float, while_running=None
) -> list[float]:
    """Submit ``count`` uploads ``gap`` seconds apart; latencies in ms from the job rows.

    ``while_running`` (a callable) stops submission once it returns False.
    """
    job_ids = []
    for index in range(count):
        if while_running is not None and not while_running():
            break
        job_ids.append(client.submit(uploads[index % len(uploads)], "bench.jpg", settings=settings))
        if while_running is None:
            wait_until(
                lambda job_id=job_ids[-1]: client.result(job_id, settings=settings).finished,
                60,
                "an interactive job",
            )
        time.sleep(gap)
    results = client.wait(job_ids, timeout=120, settings=settings)
    if not all(job and job.status == JobStatus.DONE for job in results.values()):
        raise RuntimeError("an interactive benchmark job did not end 'done'")
    with get_sessionmaker(settings.resolved_database_url)() as session:
        rows = session.execute(
            select(ClassificationJob.created_at, ClassificationJob.finished_at).where(
                ClassificationJob.id.in_([uuid.UUID(j) for j in job_ids])
            )
        ).all()
    return [(finished - created).total_seconds() * 1000 for created, finished in rows]


def measure_inference(settings: Settings, batch: int, rounds: int = 200) -> dict[str, float]:
    """``Classifier.predict`` as the bulk task calls it vs the bare signature runner."""
    from ai_edge_litert.interpreter import Interpreter

    photos, _ = _product_photos(batch)
    pixels = np.stack(
        [preprocess(photo, max_bytes=1 << 24, max_pixels=1 << 24) for photo in photos]
    )
    pixels = np.resize(pixels, (batch, 28, 28))
    classifier = Classifier(model_path(settings), num_threads=settings.inference_threads)
    interpreter = Interpreter(
        model_content=model_path(settings).read_bytes(), num_threads=settings.inference_threads
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
        endpoint, credentials = stack.enter_context(_s3_server(config, workdir, log))
        database_url = stack.enter_context(_database(config.postgres_admin_url))
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
        ids = build_catalog(settings, config.images, log)
        uploads = [path.read_bytes() for path in sorted((SAMPLES / "uploads").glob("*.jpg"))]

        naive_rate, naive_rss = measure_naive(settings, ids, config, workdir, log)

        bulk = WorkerProcess(
            settings,
            app=WORKER_APP,
            queue=settings.bulk_queue,
            concurrency=config.concurrency,
            log_path=workdir / "bulk-worker.log",
        )
        stack.callback(bulk.stop)
        wait_until(lambda: len(bulk.children()) == config.concurrency, 60, "the bulk worker")
        time.sleep(1.0)  # model loaded in worker_process_init
        total, seconds, rss_samples = _run_bulk(settings, config, "stale", bulk)
        bulk_rate = total / seconds
        log(f"bulk: {total} images in {seconds:.1f} s = {bulk_rate:.0f} images/s")

        interactive = WorkerProcess(
            settings,
            app=WORKER_APP,
            queue=settings.interactive_queue,
            concurrency=1,
            log_path=workdir / "interactive-worker.log",
        )
        stack.callback(interactive.stop)
        measure_interactive(settings, uploads, 10, gap=0.0)  # warm-up: connections, caches
        idle = measure_interactive(settings, uploads, config.interactive, gap=0.02)
        log(f"interactive, idle: {percentiles(idle)}")

        started = dt.datetime.now(dt.UTC)
        run = start_run("all", settings=settings, chunk_size=config.chunk, trigger="bench")
        busy = measure_interactive(
            settings,
            uploads,
            config.interactive,
            gap=0.05,
            while_running=lambda: run_progress(settings, run.id).done < 0.9 * run.total,
        )
        wait_until(lambda: run_progress(settings, run.id).finished, 1800, "the loaded bulk run")
        loaded_rate = run.total / (_last_classified(settings) - started).total_seconds()
        log(f"interactive, during bulk: {percentiles(busy)}; bulk meanwhile {loaded_rate:.0f}/s")

        engine = measure_inference(settings, config.chunk)
        rss_peak = {
            "naive": naive_rss,
            "bulk": bulk.memory_mb("VmHWM"),
            "interactive": interactive.memory_mb("VmHWM"),
        }
        ratio = engine["inference_images_per_s"] / engine["engine_images_per_s"]
        return {
            "naive_images_per_s": round(naive_rate, 1),
            "bulk_images_per_s": round(bulk_rate, 1),
            "bulk_speedup": round(bulk_rate / naive_rate, 1),
            "interactive_idle_ms": percentiles(idle),
            "interactive_under_load_ms": percentiles(busy),
            "bulk_images_per_s_while_interactive": round(loaded_rate, 1),
            **engine,
            "inference_vs_engine": round(ratio, 3),
            "worker_rss_mb": {
                "peak": rss_peak,
                "max_per_process_ours": max(rss_peak["bulk"] + rss_peak["interactive"]),
                "bulk_during_run": rss_samples,
            },
            "config": {
                "images": config.images,
                "naive_images": config.naive_images,
                "interactive": config.interactive,
                "chunk": config.chunk,
                "concurrency": config.concurrency,
                "fetch_threads": settings.fetch_threads,
                "s3_server": "given"
                if config.s3_endpoint
                else ("s3rver" if config.s3rver else "moto"),
                "model_version": Classifier(model_path(settings)).version,
                "cpus": os.cpu_count(),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        }
