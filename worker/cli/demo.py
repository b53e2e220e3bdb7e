"""``fashion demo``: the whole path on the embedded defaults, start to finish.

Seeds a small catalog from ``worker/samples``, starts a real Celery worker
process, classifies the catalog's photos with a ``stale`` bulk run (new
products, and those an earlier model classified when the demo ran before),
submits the sample uploads through ``worker.client``, waits for the results,
prints them, and stops the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, not_, select

from catalog.codes import JobStatus, ReclassifyMode
from catalog.db import get_sessionmaker, upgrade
from catalog.models import Product
from catalog.predictions import already_done
from worker import client
from worker.config import Settings
from worker.service.catalog_import import ImportReport, import_catalog
from worker.service.celery_app import worker_command, worker_environment
from worker.service.reclassify import start_run
from worker.service.registry import live_version_name
from worker.service.rollout import index_when_filled

SAMPLES_DIR = Path(__file__).parents[1] / "samples"
WORKER_STOP_TIMEOUT = 15


def seed_catalog(settings: Settings, samples_dir: Path = SAMPLES_DIR) -> ImportReport:
    """Import the sample products (photos stored, not queued: ``run_demo`` queues them)."""
    return import_catalog(samples_dir / "catalog.csv", settings=settings, queue=False)


def products_pending(settings: Settings, version: str) -> int:
    """Products whose photo has not been classified by model ``version`` yet."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(
            select(func.count())
            .select_from(Product)
            .where(Product.image_key.is_not(None), not_(already_done(version, None)))
        )


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen:
    """A `celery worker` child process with our environment, logging to ``log_path``."""
    command = worker_command(
        settings,
        [settings.interactive_queue, settings.bulk_queue],
        hostname=f"demo-{os.getpid()}",
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            env=worker_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM lets the worker finish in-flight work; SIGKILL if it will not stop."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WORKER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_demo(settings: Settings, *, timeout: float) -> int:
    console = Console()
    started = time.perf_counter()
    upgrade(settings.resolved_database_url)
    log_path = settings.data_dir / "demo-worker.log"
    worker = start_worker(settings, log_path)
    console.print(f"Started a Celery worker (pid {worker.pid}); its log: {log_path}")
    report = seed_catalog(settings)
    console.print(
        f"Catalog: {report.inserted + report.updated} sample products in "
        f"{settings.resolved_database_url}; objects in {settings.resolved_storage_url}; "
        f"broker {settings.resolved_broker_url}"
    )
    uploads = sorted((SAMPLES_DIR / "uploads").glob("*.jpg"))
    # The live version (on a new data dir: the configured model, registered here).
    version = live_version_name(settings)
    try:
        # New products, and those the live version has not classified yet.
        run = start_run(ReclassifyMode.STALE, settings=settings, trigger="demo", version=version)
        with console.status(f"classifying {run.total} product photos on the bulk queue"):
            deadline = time.monotonic() + timeout
            while products_pending(settings, version) and time.monotonic() < deadline:
                if worker.poll() is not None:
                    break
                time.sleep(0.2)
        pending = products_pending(settings, version)
        if not pending:
            index_when_filled(settings, version)
        if pending:
            console.print(
                f"[yellow]{pending} product photo(s) not classified by {version} after "
                f"{timeout:.0f} s: similar items may be missing (worker log: {log_path})[/yellow]"
            )
        job_ids = {
            client.submit(path.read_bytes(), path.name, settings=settings): path for path in uploads
        }
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("classifying", total=len(job_ids))
            deadline = time.monotonic() + timeout
            results: dict = {}
            while time.monotonic() < deadline and worker.poll() is None:
                results = client.wait(job_ids, timeout=0, settings=settings)
                finished = sum(1 for job in results.values() if job and job.finished)
                progress.update(bar, completed=finished)
                if finished == len(job_ids):
                    break
                time.sleep(0.2)
    finally:
        stop_worker(worker)

    table = Table(title="Sample uploads")
    for column in ("upload", "status", "label", "confidence", "similar in-stock SKUs"):
        table.add_column(column)
    unfinished = 0
    for job_id, path in job_ids.items():
        job = results.get(job_id)
        if job is None or not job.finished:
            unfinished += 1
            table.add_row(path.name, job.status if job else "unknown", "", "", "")
        elif job.status == JobStatus.FAILED:
            table.add_row(path.name, JobStatus.FAILED, job.error["code"], "", job.error["message"])
        else:
            skus = ", ".join(item["sku"] for item in job.similar) or "none in stock"
            confidence = f"{job.confidence:.1%}" + (" uncertain" if job.uncertain else "")
            table.add_row(path.name, JobStatus.DONE, job.name, confidence, skus)
    console.print(table)
    elapsed = time.perf_counter() - started
    if unfinished:
        console.print(f"[red]{unfinished} upload(s) unfinished after {timeout:.0f} s[/red]")
        return 1
    console.print(f"All {len(job_ids)} uploads classified in {elapsed:.1f} s.")
    return 0
