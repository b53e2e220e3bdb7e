"""The Celery application's configuration, and nothing else.

``make_celery(settings)`` builds an app that can send messages (the client, the
sweeper, a re-classification run use it through ``worker.service.messages``);
``worker.service.worker_app`` adds the tasks and beat's schedule to it for the
processes that run them. Nothing is built, read or created at import. Messages
are JSON only: pickle is refused, so a message can never execute code.
"""

from __future__ import annotations

import os
import sys
from functools import cache

from celery import Celery

from worker.config import Settings

#: What ``celery --app=…`` loads in a worker, beat, Flower or ``celery inspect``.
WORKER_APP = "worker.service.worker_app"


@cache
def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (cached: one per distinct configuration)."""
    settings.ensure_folders()
    app = Celery("fashion", broker=settings.resolved_broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # Job state lives in the catalog database; nobody reads Celery results.
        task_ignore_result=True,
        result_backend=None,
        # A job is acknowledged only once it finished, so a worker that dies
        # mid-task leaves it on the queue for another worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_default_queue=settings.interactive_queue,
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        broker_transport_options=settings.broker_transport_options,
        broker_connection_retry_on_startup=True,
        enable_utc=True,
    )
    return app


def worker_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as the only ``FASHION_*`` variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASHION_")}
    return env | settings.as_environment()


def worker_command(
    settings: Settings,
    queues: list[str],
    *,
    hostname: str,
    concurrency: int = 1,
    app_path: str = WORKER_APP,
    loglevel: str = "INFO",
    prefetch: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The ``celery worker`` command line the demo, the benchmark and the tests start."""
    return [
        sys.executable,
        "-m",
        "celery",
        f"--app={app_path}",
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname}@%h",
        "--without-gossip",
        "--without-mingle",
        f"--prefetch-multiplier={prefetch or settings.prefetch_multiplier(queues)}",
        *extra,
    ]
