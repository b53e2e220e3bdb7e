"""``/livez``, ``/readyz``, ``/metrics``: for the orchestrator and Prometheus, no key."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from worker.api.deps import AppServices
from worker.api.observability import readiness

#: Retry-After when a server behind the API cannot be reached.
UNAVAILABLE_RETRY_AFTER = "5"

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """``ok`` for each server behind the API, or why it cannot be reached."""

    status: Literal["ok", "unavailable"]
    database: str
    broker: str
    storage: str


@router.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """The process answers."""
    return Liveness(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A server cannot be reached."}},
)
async def readyz(app: AppServices, response: Response) -> Readiness:
    """The database, the broker and storage are reachable (503 otherwise)."""
    checks = await run_in_threadpool(readiness, app.settings)
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER
    return Readiness(status="ok" if ready else "unavailable", **checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus: requests, latency, and the upload queue's depth."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
