"""The Celery application and its configuration, and nothing else.

``celery -A worker.service.celery_app worker`` (or ``fashion worker``) runs it. Messages
are JSON only: pickle is refused, so a message can never execute code.
"""

from __future__ import annotations

import os
import sys
from functools import cache

from celery import Celery
from celery.schedules import crontab

from worker.config import Settings, get_settings

CLASSIFY_TASK = "fashion.classify"
CLASSIFY_PRODUCTS_TASK = "fashion.classify_products"
RECLASSIFY_TASK = "fashion.reclassify"
MODEL_CHECK_TASK = "fashion.reclassify_on_model_change"
SWEEP_TASK = "fashion.sweep_stuck_jobs"


def beat_schedule(settings: Settings) -> dict[str, dict]:
    """Nightly re-classification (``FASHION_RECLASSIFY_CRON``), the new-model check and
    the stuck-job sweeper."""
    schedule: dict[str, dict] = {
        # On the interactive queue: it is kept short, so a long bulk run never
        # holds the sweeper back.
        "sweep-stuck-jobs": {
            "task": SWEEP_TASK,
            "schedule": settings.sweep_seconds,
            "options": {"queue": settings.interactive_queue, "expires": settings.sweep_seconds},
        },
        "reclassify-on-model-change": {
            "task": MODEL_CHECK_TASK,
            "schedule": settings.model_check_seconds,
            "options": {"queue": settings.bulk_queue, "expires": settings.model_check_seconds},
        },
    }
    if settings.reclassify_cron.strip():
        schedule["nightly-reclassify"] = {
            "task": RECLASSIFY_TASK,
            "schedule": crontab.from_string(settings.reclassify_cron),
            "kwargs": {"mode": settings.reclassify_nightly_mode, "trigger": "nightly"},
            "options": {"queue": settings.bulk_queue},
        }
    return schedule


@cache
def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (cached: one per distinct configuration)."""
    app = Celery("fashion", broker=settings.resolved_broker_url, include=["worker.service.tasks"])
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
        task_routes={
            CLASSIFY_TASK: {"queue": settings.interactive_queue},
            CLASSIFY_PRODUCTS_TASK: {"queue": settings.bulk_queue},
            RECLASSIFY_TASK: {"queue": settings.bulk_queue},
            MODEL_CHECK_TASK: {"queue": settings.bulk_queue},
            SWEEP_TASK: {"queue": settings.interactive_queue},
        },
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        broker_transport_options=settings.broker_transport_options,
        broker_connection_retry_on_startup=True,
        enable_utc=True,
    )
    return app


app = make_celery(get_settings())


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
    app_path: str = "worker.service.celery_app",
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
