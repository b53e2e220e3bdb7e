"""What ops see of a real worker: Prometheus metrics (``FASHION_METRICS_PORT``) and
JSON log lines carrying the job id (``FASHION_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from catalog.codes import JOB_STAGES
from tests.support.factories import png_bytes
from tests.support.jobs import add_products
from tests.support.servers import free_port, wait_for_port
from worker import client
from worker.service.celery_app import worker_command, worker_environment
from worker.service.reclassify import run_progress, start_run


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_worker_serves_job_batch_queue_and_state_metrics(
    service_settings, start_worker, fashion_mnist
) -> None:
    port = free_port()
    settings = service_settings.model_copy(update={"metrics_port": port})
    start_worker(settings, queues="both")
    good = [
        client.submit(png_bytes(image), "a.png", settings=settings)
        for image in fashion_mnist.test_images[:3]
    ]
    bad = client.submit(b"GIF89a not really", "b.gif", settings=settings)
    results = client.wait([*good, bad], timeout=60, settings=settings)
    assert [results[j].status for j in good] == ["done"] * 3
    add_products(settings, fashion_mnist, 10)
    run = start_run("stale", settings=settings, chunk_size=4)
    deadline = time.monotonic() + 60
    while not run_progress(settings, run.id).finished and time.monotonic() < deadline:
        time.sleep(0.1)

    wait_for_port(port)
    deadline = time.monotonic() + 10  # pool processes count just after they commit
    while True:
        samples = scrape(port)
        if value(samples, "fashion_products_classified_total", outcome="done") == 10:
            break
        assert time.monotonic() < deadline, "the bulk run never showed in the metrics"
        time.sleep(0.2)

    assert value(samples, "fashion_jobs_finished_total", status="done", code="") == 3
    assert value(samples, "fashion_jobs_finished_total", status="failed", code="corrupt") == 1
    assert value(samples, "fashion_job_latency_seconds_count") == 4
    assert 0 < value(samples, "fashion_job_latency_seconds_sum") < 4 * 60
    for stage in JOB_STAGES:  # each stage of each done upload
        assert value(samples, "fashion_job_stage_seconds_count", stage=stage) == 3, stage
    assert value(samples, "fashion_job_stage_seconds_sum", stage="inference") > 0
    assert value(samples, "fashion_batch_size_sum", queue="interactive") == 3
    assert value(samples, "fashion_batch_size_sum", queue="bulk") == 10
    assert value(samples, "fashion_batch_size_count", queue="bulk") == 3  # chunks of 4, 4, 2
    assert value(samples, "fashion_queue_depth", queue=settings.interactive_queue) == 0
    assert value(samples, "fashion_queue_depth", queue=settings.bulk_queue) == 0
    assert value(samples, "fashion_jobs", state="done") == 3
    assert value(samples, "fashion_jobs", state="failed") == 1


@pytest.mark.processes
def test_json_logs_carry_the_job_id(service_settings, fashion_mnist, tmp_path) -> None:
    settings = service_settings.model_copy(update={"log_format": "json"})
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            worker_command(settings, [settings.interactive_queue], hostname="logs-test"),
            env=worker_environment(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            bad = client.submit(b"GIF89a not really", "b.gif", settings=settings)
            assert client.wait([bad], timeout=60, settings=settings)[bad].status == "failed"
        finally:
            worker.terminate()
            worker.wait(30)

    # Log records are JSON lines; Celery's start-up banner and warnings are not records.
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) >= 2, lines  # at least "Connected to redis" and the job's failure
    about_the_job = [r for r in records if bad in r.get("job_ids", [])]
    assert any(r["levelname"] == "WARNING" and "corrupt" in r["message"] for r in about_the_job), (
        about_the_job
    )


def test_a_stopped_worker_leaves_no_metrics_folder_behind(
    service_settings, start_worker, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    (tmp_path / "tmp").mkdir()
    port = free_port()
    worker = start_worker(service_settings.model_copy(update={"metrics_port": port}))
    wait_for_port(port, timeout=60)
    assert len(list((tmp_path / "tmp").glob("fashion-metrics-*"))) == 1  # in use

    worker.terminate()
    assert worker.wait(60) == 0
    assert list((tmp_path / "tmp").glob("fashion-metrics-*")) == []


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_bulk_only_worker_runs_at_lower_priority_than_an_upload_worker(
    service_settings, start_worker
) -> None:
    bulk = start_worker(service_settings, queues="bulk")
    uploads = start_worker(service_settings, queues="interactive")
    for worker in (bulk, uploads):
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split():
            assert time.monotonic() < deadline, "the pool never started"
            time.sleep(0.1)
    pool = {
        worker.pid: [
            int(child)
            for child in Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        ]
        for worker in (bulk, uploads)
    }
    assert {niceness(pid) for pid in [bulk.pid, *pool[bulk.pid]]} == {service_settings.bulk_nice}
    assert {niceness(pid) for pid in [uploads.pid, *pool[uploads.pid]]} == {0}
