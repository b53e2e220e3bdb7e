"""``fashion health``: a worker that answers pings but takes no message is unhealthy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.factories import png_bytes
from worker import client
from worker.service.celery_app import make_celery, worker_environment
from worker.service.health import check

pytestmark = pytest.mark.processes


def only_node(settings) -> str:  # type: ignore[no-untyped-def]
    """The name of the one worker started with ``settings``: the one whose heartbeat is
    in their data dir (pings reach every worker on the broker, other tests' too)."""
    folder = settings.data_dir / "health"
    deadline = time.monotonic() + 60
    while not (folder.exists() and list(folder.iterdir())):
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.1)
    (path,) = folder.iterdir()
    return path.name


def health_command(settings, node: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "health",
            "--node",
            node,
            "-Q",
            settings.interactive_queue,
            "--stale-after",
            "2",
            "--json",
        ],
        env=worker_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_that_answers_pings_but_consumes_nothing_is_unhealthy(
    service_settings, start_worker, fashion_mnist
) -> None:
    settings = service_settings
    start_worker(settings, queues="interactive", prefetch=16)
    node = only_node(settings)
    warm = client.submit(png_bytes(fashion_mnist.test_images[0]), "w.png", settings=settings)
    assert client.wait([warm], timeout=60, settings=settings)[warm].status == "done"
    queues = [settings.interactive_queue]
    time.sleep(3)  # idle longer than --stale-after: still healthy, nothing waits
    assert check(settings, node, queues, stale_after=2, ping_timeout=5).healthy
    assert health_command(settings, node).returncode == 0

    # The worker stops taking messages but keeps answering pings, as one whose
    # prefetch slots had all leaked did.
    make_celery(settings).control.cancel_consumer(
        settings.interactive_queue, destination=[node], reply=True
    )
    stuck = client.submit(png_bytes(fashion_mnist.test_images[1]), "s.png", settings=settings)
    time.sleep(3)

    report = check(settings, node, queues, stale_after=2, ping_timeout=5)
    assert report.answers_ping and not report.healthy
    assert report.waiting == {settings.interactive_queue: 1}
    assert "messages are waiting" in report.problems[0]
    assert health_command(settings, node).returncode == 1
    assert client.result(stuck, settings=settings).status == "queued"
