"""The HTTP API in ``fashion bench``: its latency beside the direct path, and how many
uploads a second one ``fashion api`` process answers in time, open-loop.

``measure_api``: ``POST /v1/classifications?wait=10`` as the caller sees it, alternating
with ``client.submit`` + ``client.wait`` (``api_overhead_ms`` is the difference).

``measure_api_capacity``: a small asyncio driver sends ``POST
/v1/classifications?wait=10`` at a fixed arrival rate for ``step_s`` seconds, each
request on its own schedule whether or not the earlier ones were answered (open-loop:
a slow server does not slow the callers, as in production), and measures each
answer. The rate grows by half at each step; ``api_capacity_uploads_per_s`` is the
highest rate whose p99 stayed within ``P99_TARGET_MS`` with every upload answered
200. The step past it is kept too: what callers get there (200 late, 202 still
running, 429 ``queue_full`` with ``Retry-After``). Every upload accepted (200 or 202)
is then waited for: one that never ends ``done`` counts as lost.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from catalog.codes import JobStatus
from catalog.db import get_sessionmaker
from worker import client
from worker.config import Settings
from worker.tools.harness import ApiProcess

P99_TARGET_MS = 150.0
FIRST_RATE, GROWTH, MAX_RATE = 10.0, 1.5, 400.0


@dataclass
class Step:
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    accepted: list[str] = field(default_factory=list)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(np.ceil(0.99 * len(ordered))) - 1)]

    @property
    def in_time(self) -> bool:
        return set(self.statuses) == {200} and self.p99 <= P99_TARGET_MS

    def figures(self) -> dict[str, Any]:
        return {
            "rate_per_s": round(self.rate, 1),
            "sent": sum(self.statuses.values()),
            "p50_ms": round(statistics.median(self.latencies_ms), 1),
            "p99_ms": round(self.p99, 1),
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "retry_after": sorted(self.retry_after),
        }


async def _one(http: httpx.AsyncClient, photo: bytes, step: Step) -> None:
    started = time.perf_counter()
    response = await http.post("/v1/classifications", params={"wait": 10}, content=photo)
    step.latencies_ms.append((time.perf_counter() - started) * 1000)
    step.statuses[response.status_code] += 1
    if response.status_code in (200, 202):
        step.accepted.append(response.json()["id"])
    elif "retry-after" in response.headers:
        step.retry_after.add(response.headers["retry-after"])


async def _step(http: httpx.AsyncClient, photos: list[bytes], rate: float, seconds: float) -> Step:
    """Send ``rate`` uploads a second for ``seconds``, each on its own schedule."""
    step = Step(rate)
    start = time.perf_counter()
    pending = []
    for index in range(max(1, round(rate * seconds))):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(_one(http, photos[index % len(photos)], step)))
    await asyncio.gather(*pending)
    return step


async def _drive(url: str, key: str, photos: list[bytes], step_s: float) -> list[Step]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    steps: list[Step] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:
        await _step(http, photos, 5, 1.0)  # warm: connections, the key cache
        rate = FIRST_RATE
        while rate <= MAX_RATE:
            steps.append(await _step(http, photos, rate, step_s))
            if not steps[-1].in_time:
                break  # the first step past capacity: what callers get there
            await asyncio.sleep(1.0)  # the queue drains between steps
            rate *= GROWTH
    return steps


def measure_capacity(
    settings: Settings, url: str, key: str, photos: list[bytes], *, step_s: float = 4.0
) -> dict[str, Any]:
    """The API's open-loop capacity: the steps, the highest rate answered in time, and
    how many accepted uploads did not finish ``done`` (lost)."""
    steps = asyncio.run(_drive(url, key, photos, step_s))
    accepted = [job_id for step in steps for job_id in step.accepted]
    results = client.wait(accepted, timeout=120, settings=settings)
    lost = sum(1 for job in results.values() if job is None or job.status != JobStatus.DONE)
    in_time = [step for step in steps if step.in_time]
    best = in_time[-1] if in_time else None
    return {
        "api_capacity_uploads_per_s": round(best.rate, 1) if best else 0.0,
        "api_capacity_ms": (
            {"p50": round(statistics.median(best.latencies_ms), 1), "p99": round(best.p99, 1)}
            if best
            else None
        ),
        "api_capacity_steps": [step.figures() for step in steps],
        "api_capacity_accepted": len(accepted),
        "api_capacity_lost": lost,
    }


#: The capacity run's ``FASHION_API_MAX_QUEUE_DEPTH``: ~20 uploads is what one
#: interactive worker finishes within the 150 ms target.
CAPACITY_QUEUE_DEPTH = 20


def measure_api(
    settings: Settings, uploads: list[bytes], count: int, workdir: Path
) -> tuple[list[float], list[float]]:
    """(API, direct) caller-side latencies in ms: ``count`` uploads each way, alternating."""
    from catalog.api_keys import create_api_key

    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        key = create_api_key(session=session, name=f"bench-{uuid.uuid4().hex[:6]}").key
    server = ApiProcess(settings, log_path=workdir / "api.log")
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
        api_ms, direct_ms = [], []
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            for index in range(count + 10):  # the first 10 of each warm connections up
                data = uploads[index % len(uploads)]
                started = time.perf_counter()
                response = http.post("/v1/classifications", params={"wait": 10}, content=data)
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 200 or response.json()["status"] != JobStatus.DONE:
                    raise RuntimeError(f"API upload: {response.status_code} {response.text[:200]}")
                started = time.perf_counter()
                job_id = client.submit(data, "bench.jpg", settings=settings)
                job = client.wait([job_id], timeout=60, settings=settings)[job_id]
                direct = (time.perf_counter() - started) * 1000
                if job is None or job.status != JobStatus.DONE:
                    raise RuntimeError(f"direct upload ended {job.status}")
                if index >= 10:
                    api_ms.append(took)
                    direct_ms.append(direct)
                time.sleep(0.02)
    finally:
        server.stop()
    return api_ms, direct_ms


def measure_api_capacity(
    settings: Settings, uploads: list[bytes], workdir: Path, step_s: float
) -> dict[str, Any]:
    """``bench_capacity`` against a ``fashion api`` of its own: no per-key rate (one key
    drives it) and a queue-depth limit of ``CAPACITY_QUEUE_DEPTH``, so that past its
    capacity the door answers 429 ``queue_full`` instead of a queue callers wait on."""
    from catalog.api_keys import create_api_key

    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        key = create_api_key(session=session, name=f"capacity-{uuid.uuid4().hex[:6]}").key
    server = ApiProcess(
        settings,
        extra_env={
            "FASHION_API_RATE_LIMIT": "0",
            "FASHION_API_MAX_QUEUE_DEPTH": str(CAPACITY_QUEUE_DEPTH),
        },
        log_path=workdir / "api-capacity.log",
    )
    try:
        return measure_capacity(settings, server.url, key, uploads, step_s=step_s)
    finally:
        server.stop()
