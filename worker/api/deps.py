"""What a route may ask for: the app's shared parts, and the caller behind a request.

``CurrentCaller`` is the only way a ``/v1`` route learns who calls: an API key sent
as ``Authorization: Bearer <key>`` (declared as the OpenAPI security scheme), of
the backend scope, within its rate. No handler authorises by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from catalog.models import ClassificationJob
from catalog.queries import get_job
from worker.api.auth import Caller, Keys, backend_only
from worker.api.errors import ApiError, ApiErrorCode
from worker.api.limits import QueueDepth, RateLimiter, Saturated
from worker.api.waiting import Waiters
from worker.config import Settings


@dataclass(frozen=True)
class Services:
    """One per app: settings, database sessions, the key cache, backpressure, rate, and
    the requests waiting for their job."""

    settings: Settings
    sessions: sessionmaker[Session]
    keys: Keys
    depth: QueueDepth
    rate: RateLimiter
    waiters: Waiters

    @classmethod
    def for_settings(cls, settings: Settings, sessions: sessionmaker[Session]) -> Services:
        return cls(
            settings,
            sessions,
            Keys(settings),
            QueueDepth(settings),
            RateLimiter(settings),
            Waiters(sessions, settings),
        )


def services(request: Request) -> Services:
    return request.app.state.services


AppServices = Annotated[Services, Depends(services)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="API key",
    description="A backend's API key (`fashion api-key create NAME`).",
)


async def current_caller(
    app: AppServices,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The backend key behind the request: 401 without a known key, 403 for a
    reviewer's key, 429 past the key's rate."""
    authorization = f"Bearer {credentials.credentials}" if credentials else None
    # A key seen in the last seconds and the rate counter (async Redis) cost no
    # thread-pool hop: on this 2-core machine each hop was ~1 ms of the overhead.
    caller = backend_only(
        app.keys.remembered(authorization)
        or await run_in_threadpool(app.keys.caller, authorization)
    )
    try:
        wait_s = await app.rate.allow(caller.prefix)
    except Saturated as exc:
        raise ApiError(
            429,
            ApiErrorCode.RATE_LIMITED,
            "this API process has more requests in hand than it can take; try again shortly",
            {"Retry-After": str(Saturated.retry_after)},
        ) from exc
    if wait_s:
        raise ApiError(
            429,
            ApiErrorCode.RATE_LIMITED,
            f"more than {app.settings.api_rate_limit} requests a minute with this key",
            {"Retry-After": str(wait_s)},
        )
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def not_found(message: str) -> ApiError:
    return ApiError(404, ApiErrorCode.NOT_FOUND, message)


def owned_job(*, session: Session, caller: Caller, job_id: str) -> ClassificationJob:
    """The caller's job ``job_id``: the ownership rule, written once. Another key's job
    is answered exactly like a job that does not exist (404), so a stranger learns
    nothing about it."""
    job = get_job(session=session, job_id=job_id)
    if job is None or job.api_key_id != caller.key_id:
        raise not_found(f"no job {job_id}")
    return job
