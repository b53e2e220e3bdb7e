"""Requests waiting for their job to finish (``?wait=``): woken by the worker's notice.

A worker publishes the ids of the jobs it finished on ``messages.FINISHED_CHANNEL``
once their rows are committed, with their answers where it has them. Each API
process keeps one subscription (a task on its event loop, started with the first
waiter) and wakes the requests parked on those jobs, handing each its job's answer:
no thread and no database read per waiter, and none to answer it. A notice can be
lost (Redis restarted, the subscription was being made again), so one shared poller
still reads every waited-for job in one query, every ``SAFETY_POLL_S`` (1 s) while
the subscription is up.

Where completion is not pushed (the embedded defaults' folder broker) or while the
subscription is down, the poller reads on a single waiter's old schedule: every 5 ms,
every 50 ms once the newest waiter has waited half a second. (Each long-poll once
read its job every 5 ms through the thread pool: 90 of them raised another tenant's
``GET /similar`` median from 10.9 to 222 ms.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import redis.asyncio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from catalog.codes import TERMINAL_STATUSES
from catalog.models import ClassificationJob
from catalog.queries import as_uuid
from worker.config import Settings
from worker.service.messages import (
    FINISHED_CHANNEL,
    SAFETY_POLL_S,
    finished_notice,
    pushes_completion,
)

log = logging.getLogger(__name__)

#: A finished job as callers see it (``catalog.public.JobResult``, JSON by alias).
Answer = dict[str, Any]

#: Reads while some request has waited less than ``FAST_POLLING`` seconds: every 5 ms
#: (an idle worker answers in ~20-50 ms); after that, every 50 ms. Polling only.
FIRST_POLL, LAST_POLL, FAST_POLLING = 0.005, 0.05, 0.5
#: Seconds between attempts to subscribe again after the subscription broke.
RESUBSCRIBE_S = 1.0


def poll_interval(waited: float) -> float:
    """Seconds until the next read of a job being waited for, ``waited`` s in, when
    completion is not pushed."""
    return FIRST_POLL if waited < FAST_POLLING else LAST_POLL


class Waiters:
    """Futures of requests waiting on jobs, woken by the worker's notices (one
    subscription per process) and by one shared safety-net poller."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._broker_url = settings.resolved_broker_url if pushes_completion(settings) else None
        self._waiting: dict[uuid.UUID, set[asyncio.Future[Answer | None]]] = {}
        self._since: dict[asyncio.Future[Answer | None], float] = {}
        self._poller: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        #: The subscription is up: the poller is only the safety net.
        self.listening = False
        #: Set by each new waiter: the poller's next tick comes within ``FIRST_POLL``.
        self._arrived = asyncio.Event()
        #: Reads of the database made by the poller (one per tick, whatever the waiters).
        self.reads = 0
        #: Waiters woken by a notice.
        self.pushed = 0
        #: Of them, those handed their job's answer with it.
        self.answered = 0

    async def until_finished(
        self,
        job_id: uuid.UUID,
        timeout: float,
        finished_now: Callable[[], Awaitable[bool]],
    ) -> Answer | None:
        """Return once job ``job_id`` is finished, or after ``timeout`` seconds: its
        answer when a notice brought it. ``finished_now`` is read once the waiter is
        registered, so a job that finished just before is not waited for and one that
        finishes after wakes it."""
        async with self.watching(job_id) as finished:
            if not await finished_now():
                return await finished(timeout)
        return None

    @contextlib.asynccontextmanager
    async def watching(
        self, job_id: uuid.UUID
    ) -> AsyncIterator[Callable[[float], Awaitable[Answer | None]]]:
        """Register a waiter on ``job_id`` for the block: it gives a function that
        returns once the job finished (from the moment of registration) or after its
        timeout, with the job's answer (``JobResult`` as JSON) when the notice that
        woke it carried one (``None``: read the catalog). For a job not yet
        submitted, nothing needs reading first."""
        future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        self._since[future] = time.monotonic()
        self._arrived.set()
        self._start()

        async def finished(timeout: float) -> Answer | None:
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                return None
            self.answered += answer is not None
            return answer

        try:
            yield finished
        finally:
            self._forget(job_id, future)

    def _start(self) -> None:
        if self._broker_url and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen(self._broker_url))
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    def _forget(self, job_id: uuid.UUID, future: asyncio.Future[Answer | None]) -> None:
        self._since.pop(future, None)
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[job_id]

    def _wake(self, answers: Mapping[uuid.UUID, Answer | None]) -> int:
        """Wake the waiters on these jobs, each with its job's answer (or ``None``)."""
        woken = 0
        for job_id, answer in answers.items():
            for future in self._waiting.get(job_id, ()):
                if not future.done():
                    future.set_result(answer)
                    woken += 1
        return woken

    async def _listen(self, url: str) -> None:
        """The process's one subscription, made again whenever it breaks."""
        while True:
            client = redis.asyncio.Redis.from_url(url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(FINISHED_CHANNEL)
                    self.listening = True
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            notice = finished_notice(message["data"])
                            answers = {as_uuid(text): answer for text, answer in notice.items()}
                            answers.pop(None, None)
                            self.pushed += self._wake(answers)
            except (redis.RedisError, OSError):
                log.warning("the finished-jobs subscription broke; polling meanwhile")
            finally:
                self.listening = False
                await client.aclose()
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _poll(self) -> None:
        while self._waiting:
            try:
                finished = await run_in_threadpool(self._finished_among, list(self._waiting))
            except Exception:  # noqa: BLE001 - a database hiccup: the waiters time out at worst
                log.warning("reading the waited-for jobs failed; trying again", exc_info=True)
                await asyncio.sleep(LAST_POLL)
                continue
            self.reads += 1
            self._wake(dict.fromkeys(finished))
            if self.listening:
                await asyncio.sleep(SAFETY_POLL_S)
                continue
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
