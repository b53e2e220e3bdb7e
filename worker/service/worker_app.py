"""The Celery app that workers, beat, Flower and ``celery inspect`` load.

``celery --app=worker.service.worker_app worker`` (what ``fashion worker`` and
``worker_command`` run): reading the module's ``app`` builds it from the
environment's settings on first use (PEP 562), with the tasks registered, the
routes and beat's schedule set, and the worker's signal handlers connected.
Importing the module does nothing.
"""

from __future__ import annotations

from functools import cache

from celery import Celery

from worker.config import Settings, get_settings
from worker.service.celery_app import make_celery
from worker.service.messages import beat_schedule, task_routes
from worker.service.tasks import connect_signals, register_tasks


@cache
def make_worker_app(settings: Settings) -> Celery:
    """``make_celery(settings)`` with everything a worker or beat needs (once per settings)."""
    app = make_celery(settings)
    app.conf.update(task_routes=task_routes(settings), beat_schedule=beat_schedule(settings))
    register_tasks(app, settings)
    connect_signals(settings)
    return app


def __getattr__(name: str) -> Celery:
    if name == "app":
        return make_worker_app(get_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
