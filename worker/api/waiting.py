"""Requests waiting for their job to finish (``?wait=``): one poller per API process.

Each long-poll used to read its job every 5 ms (every 50 ms after half a second),
each read a hop to the thread pool: 90 long-polls on one queued job raised another
tenant's ``GET /similar`` median from 10.9 to 222 ms. Now a waiting request parks
on an ``asyncio`` future, and one task reads all the waited-for jobs in one query
per tick, on the same schedule a single waiter had (``poll_interval``), and wakes
the requests whose job finished. The pushed completion of the latency issue will
replace the tick; the tick stays as its safety net.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from catalog.codes import TERMINAL_STATUSES
from catalog.models import ClassificationJob

log = logging.getLogger(__name__)

#: Reads while some request has waited less than ``FAST_POLLING`` seconds: every 5 ms
#: (an idle worker answers in ~20-50 ms); after that, every 50 ms.
FIRST_POLL, LAST_POLL, FAST_POLLING = 0.005, 0.05, 0.5


def poll_interval(waited: float) -> float:
    """Seconds until the next read of a job being waited for, ``waited`` s in."""
    return FIRST_POLL if waited < FAST_POLLING else LAST_POLL


class Waiters:
    """Futures of requests waiting on jobs, woken by one shared poller."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._waiting: dict[uuid.UUID, set[asyncio.Future[None]]] = {}
        self._since: dict[asyncio.Future[None], float] = {}
        self._poller: asyncio.Task[None] | None = None
        #: Set by each new waiter: the poller's next tick comes within ``FIRST_POLL``.
        self._arrived = asyncio.Event()
        #: Reads of the database made by the poller (one per tick, whatever the waiters).
        self.reads = 0

    async def until_finished(self, job_id: uuid.UUID, timeout: float) -> None:
        """Return once job ``job_id`` is finished, or after ``timeout`` seconds."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        self._since[future] = time.monotonic()
        self._arrived.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            self._forget(job_id, future)

    def _forget(self, job_id: uuid.UUID, future: asyncio.Future[None]) -> None:
        self._since.pop(future, None)
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[job_id]

    async def _poll(self) -> None:
        while self._waiting:
            try:
                finished = await run_in_threadpool(self._finished_among, list(self._waiting))
            except Exception:  # noqa: BLE001 - a database hiccup: the waiters time out at worst
                log.warning("reading the waited-for jobs failed; trying again", exc_info=True)
                await asyncio.sleep(LAST_POLL)
                continue
            self.reads += 1
            for job_id in finished:
                for future in self._waiting.get(job_id, ()):
                    if not future.done():
                        future.set_result(None)
            youngest = max(self._since.values(), default=time.monotonic())
            await self._sleep(poll_interval(time.monotonic() - youngest))

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, cut to ``FIRST_POLL`` by a waiter arriving meanwhile: one
        that came while older waiters were read every 50 ms waited up to 50 ms for its
        first read (another tenant's upload took 63 ms instead of 45 beside 100 of them)."""
        deadline = time.monotonic() + seconds
        self._arrived.clear()
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return
            self._arrived.clear()
            deadline = min(deadline, time.monotonic() + FIRST_POLL)

    def _finished_among(self, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(ClassificationJob.id).where(
                        ClassificationJob.id.in_(list(job_ids)),
                        ClassificationJob.status.in_([s.value for s in TERMINAL_STATUSES]),
                    )
                )
            )
