"""Is this worker consuming? A health check that a stuck worker cannot pass.

``celery inspect ping`` only proves the main process answers: a worker whose
prefetch slots had all leaked answered pings for ever while it consumed nothing.
So each worker also keeps a heartbeat of the last message it took (the mtime of
one file, touched on every message and at start-up), and ``fashion health`` calls
the worker unhealthy when it does not answer a ping, or when messages wait on its
queues and it has taken none for ``--stale-after`` seconds. An idle worker with
empty queues is healthy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.service.celery_app import make_celery
from worker.service.status import queue_depths


def heartbeat_path(settings: Settings, node: str) -> Path:
    """Where worker ``node`` (``celery@host``) records when it last took a message."""
    return settings.data_dir / "health" / node.replace("/", "_")


def beat(settings: Settings, node: str) -> None:
    """Record that ``node`` took a message (or started) now."""
    path = heartbeat_path(settings, node)
    try:
        path.touch()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@dataclass
class Health:
    node: str
    answers_ping: bool
    waiting: dict[str, int]
    seconds_since_last_message: float | None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "healthy": self.healthy,
            "answers_ping": self.answers_ping,
            "waiting": self.waiting,
            "seconds_since_last_message": (
                None
                if self.seconds_since_last_message is None
                else round(self.seconds_since_last_message, 1)
            ),
            "problems": self.problems,
        }


def check(
    settings: Settings, node: str, queues: list[str], *, stale_after: float, ping_timeout: float
) -> Health:
    """The health of worker ``node`` consuming ``queues``."""
    replies = make_celery(settings).control.ping(destination=[node], timeout=ping_timeout) or []
    answers = any(node in reply for reply in replies)
    depths = queue_depths(settings)
    waiting = {queue: depths.get(queue, 0) for queue in queues}
    path = heartbeat_path(settings, node)
    age = time.time() - path.stat().st_mtime if path.exists() else None
    health = Health(node, answers, waiting, age)
    if not answers:
        health.problems.append(f"{node} does not answer a ping within {ping_timeout:g} s")
    if any(waiting.values()) and (age is None or age > stale_after):
        took = "never took a message" if age is None else f"took none for {age:.0f} s"
        queued = ", ".join(f"{count} on {queue}" for queue, count in waiting.items() if count)
        health.problems.append(f"messages are waiting ({queued}) and {node} {took}")
    return health
