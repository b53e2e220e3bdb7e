"""Micro-batching of uploads: celery-batches' ``Batches``, made safe to run for months,
and started at once when a pool process is free.

celery-batches flushes its buffer on a timer (``FASHION_BATCH_MAX_WAIT_MS``) or once
it holds ``FASHION_BATCH_MAX_SIZE`` messages, so an upload reaching an idle worker
waited the whole timer for neighbours that were not coming. Here (``eager``, the
default) an upload that finds a pool process free is handed to it at once, and a
process that finishes a batch takes what gathered meanwhile: an idle worker adds no
wait, and under load the batches grow with the load (the uploads that arrive while
every process is busy share the next batch). The timer stays, as the backstop.

Two gaps in celery-batches (0.10) could leave an interactive worker alive, answering
pings, and consuming nothing:

- **A pool process that dies mid-batch** (SIGKILL, the OOM killer, the hard time
  limit) ended the batch with neither an acknowledgement nor a rejection: its
  prefetch slots leaked, and after ``FASHION_BATCH_MAX_SIZE`` such deaths the
  worker took no more messages. Here the pool's error path rejects the batch's
  messages with requeue, so they are delivered again (and a job that keeps killing
  its process ends ``poison`` after ``FASHION_MAX_ATTEMPTS`` deliveries).
- **Messages waiting for an ETA** (our retries' countdown) held prefetch slots, so
  sixteen retries could block fresh uploads until they were due. Here, as Celery's
  own strategy does, a message with an ETA raises the prefetch count while it waits
  and lowers it once it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = logging.getLogger(__name__)


class MicroBatches(Batches):
    """``Batches`` whose messages are always acknowledged or given back, and whose
    ETA messages do not hold prefetch slots; ``eager``: flushed at once while a pool
    process is free."""

    #: Hand a message to a free pool process at once (not after ``flush_interval``).
    eager = True
    #: Batches handed to the pool and not yet returned (read in the worker's loop).
    _running = 0

    def Strategy(self, task: Batches, app: Celery, consumer: Consumer) -> Callable:
        # consumer.qos is made after the strategies: look it up when a message comes.
        self._consumer = consumer
        handle = super().Strategy(task, app, consumer)

        def on_message(
            message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
        ) -> None:
            if (message.headers or {}).get("eta"):
                consumer.qos.increment_eventually()
            handle(message, body, ack, reject, callbacks, **kw)
            self._flush_if_free()

        return on_message

    def _flush_if_free(self) -> None:
        """Flush the buffer now if ``eager`` and a pool process is free: an empty buffer
        flushes nothing, and a missed return only falls back to the timer."""
        if self.eager and self._running < self._pool.limit and not self._buffer.empty():
            self._do_flush()

    def _returned(self) -> None:
        self._running = max(0, self._running - 1)
        self._flush_if_free()

    def flush(self, requests: Collection[Request]) -> Any:
        for request in requests:
            if request.eta:  # it waited for its ETA without holding a slot: done waiting
                self._consumer.qos.decrement_eventually()
        acks_late = [request for request in requests if request.task.acks_late]
        acks_early = [request for request in requests if not request.task.acks_late]
        # The prefork pool pickles what it runs.
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        def on_accepted(pid: int, time_accepted: float) -> None:
            for request in acks_early:
                request.acknowledge()

        def on_return(result: Any) -> None:
            for request in acks_late:
                request.acknowledge()
            self._returned()

        def on_pool_error(exc_info: Any) -> None:
            log.error(
                "the pool process running a batch of %d died (%s); giving the messages back",
                len(requests),
                getattr(exc_info, "exception", exc_info),
            )
            for request in acks_late:
                request.reject(requeue=True)
            self._returned()

        self._running += 1
        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_pool_error,
        )
