"""Backpressure and fairness: refuse work early, with ``Retry-After``, rather than queue
what cannot be served in time.

- **Queue depth.** While more uploads wait on the interactive queue than
  ``FASHION_API_MAX_QUEUE_DEPTH``, a new upload is answered 429 ``queue_full``: it
  would likely pass its deadline before a worker reached it. The depth is the
  broker's own count, read at most once a second per API process.
- **Rate.** ``FASHION_API_RATE_LIMIT`` requests per minute per key, counted in fixed
  one-minute windows: in Redis when the broker is Redis (shared by every API
  process), in the process on the embedded defaults.
- **Burst.** At most ``REDIS_CONNECTIONS`` requests of one process count in Redis at
  once; the others wait their turn for up to ``TURN_WAIT`` s and are then answered
  429 (``Saturated``) with ``Retry-After``. redis-py's own pool caps at 100 and
  raised ``MaxConnectionsError`` past it: 127 of a burst of 300 uploads got 503.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import redis.asyncio
from kombu.exceptions import ChannelError

from worker.config import Settings
from worker.service.celery_app import make_celery

#: Seconds a queue depth reading is reused.
DEPTH_TTL = 1.0
#: ... and again at the limit, at most this often.
DEPTH_RECHECK = 0.05
WINDOW = 60
#: Redis connections of one API process's rate counter, and how long a request
#: waits for one before it is told to come back.
REDIS_CONNECTIONS = 50
TURN_WAIT = 2.0


class Saturated(Exception):
    """This process has more requests in hand than it can count in time: retry later."""

    retry_after = 1


class QueueDepth:
    """Messages waiting on the interactive queue: the broker's count, read at most every
    ``DEPTH_TTL`` s, plus the uploads this process accepted since that reading (a
    burst in the first second let 60-100 in against a limit of 20)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._value = 0
        self._accepted_since_read = 0
        self._read_at = float("-inf")

    def current(self) -> int:
        """The estimate, read from the broker first when it is due (blocking)."""
        with self._lock:
            if self._due():
                self._value = self._read()
                self._read_at = time.monotonic()
                self._accepted_since_read = 0
            return self._value + self._accepted_since_read

    def remembered(self) -> int | None:
        """The estimate when no reading is due (``None``: call ``current``): the API
        asks this on its event loop, saving most uploads a thread-pool hop."""
        with self._lock:
            return None if self._due() else self._value + self._accepted_since_read

    def _due(self) -> bool:
        age = time.monotonic() - self._read_at
        at_limit = self._value + self._accepted_since_read >= self.settings.api_max_queue_depth
        # At the limit the estimate is read again (at most every DEPTH_RECHECK s):
        # uploads accepted since the last reading may be finished already (at 22
        # uploads a second, an idle worker's queue empty, a limit of 20 refused 10
        # of 90 within a second).
        return age >= DEPTH_TTL or (at_limit and age >= DEPTH_RECHECK)

    def accepted(self) -> None:
        """One more upload queued by this process since the last reading."""
        with self._lock:
            self._accepted_since_read += 1

    def _read(self) -> int:
        app = make_celery(self.settings)
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            try:
                declared = connection.default_channel.queue_declare(
                    queue=self.settings.interactive_queue, passive=True
                )
            except ChannelError:  # Redis drops the key of an empty list: nothing waits
                return 0
            return declared.message_count


class RateLimiter:
    """``await allow(key)`` → seconds to wait (0: go ahead)."""

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.api_rate_limit
        self._redis = (
            None
            if settings.filesystem_broker or not settings.resolved_broker_url.startswith("redis")
            # At most REDIS_CONNECTIONS in use: ``_turns`` lets no more through.
            else redis.asyncio.Redis.from_url(
                settings.resolved_broker_url, max_connections=REDIS_CONNECTIONS
            )
        )
        # Created on first use, on the serving event loop.
        self._turns: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = defaultdict(int)

    async def allow(self, key: str) -> int:
        if not self.limit:
            return 0
        now = time.time()
        window = int(now // WINDOW)
        if self._redis is not None:
            count = await self._count_in_redis(f"fashion:api-rate:{key}:{window}")
        else:
            with self._lock:
                self._counts = defaultdict(
                    int, {k: v for k, v in self._counts.items() if k[1] == window}
                )
                self._counts[(key, window)] += 1
                count = self._counts[(key, window)]
        if count <= self.limit:
            return 0
        return max(1, int((window + 1) * WINDOW - now) + 1)

    async def _count_in_redis(self, name: str) -> int:
        if self._turns is None:
            self._turns = asyncio.Semaphore(REDIS_CONNECTIONS)
        try:
            async with asyncio.timeout(TURN_WAIT):
                await self._turns.acquire()
        except TimeoutError as exc:
            raise Saturated from exc
        try:
            async with self._redis.pipeline() as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW * 2)
                return (await pipe.execute())[0]
        finally:
            self._turns.release()
