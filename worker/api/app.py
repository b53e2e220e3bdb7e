"""The FastAPI application: uploads in, results out, over HTTP with an API key.

Every handler that touches the database, the broker or storage runs their
(blocking) clients in Starlette's thread pool; long-polls (``wait``) sleep on the
event loop between reads, so a waiting request holds no thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import botocore.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog.codes import TERMINAL_STATUSES, ErrorCode
from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob
from catalog.queries import as_uuid, get_job, get_product
from catalog.similar import similar_to_product
from worker import client
from worker.api.auth import Caller, Keys, backend_only
from worker.api.errors import ApiError, ApiErrorCode
from worker.api.limits import QueueDepth, RateLimiter
from worker.api.observability import DepthCollector, ReviewCollector, readiness
from worker.api.review import review_router
from worker.api.uploads import read_upload
from worker.callbacks import CallbackUrlError, check_callback_url
from worker.config import Settings, get_settings
from worker.errors import FashionError
from worker.service.retention import erase

#: The longest a request may wait for its result (``wait``), in seconds.
MAX_WAIT = 10.0
#: Long-poll reads: every 5 ms for the first half second (an idle worker answers in
#: ~20-50 ms), then every 50 ms.
FIRST_POLL, LAST_POLL, FAST_POLLING = 0.005, 0.05, 0.5
#: Retry-After when a server behind the API cannot be reached.
UNAVAILABLE_RETRY_AFTER = "5"

WaitSeconds = Annotated[
    float,
    Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the result (long-poll), at most 10."),
]

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The photo: the raw bytes (Content-Type: image/jpeg, image/png, …) "
        "or a multipart/form-data body with the field `file`.",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "callback_url": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
        },
    }
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Fashion classifier",
        version="1",
        description="Classify clothing photos and offer similar in-stock items. "
        "Authenticate with `Authorization: Bearer <API key>` (`fashion api-key create`).",
    )
    keys = Keys(settings)
    depth = QueueDepth(settings)
    rate = RateLimiter(settings)
    sessions = get_sessionmaker(settings.resolved_database_url)
    registry = CollectorRegistry()
    requests = Counter(
        "fashion_api_requests",
        "HTTP requests answered.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "fashion_api_request_seconds",
        "Time to answer, by route (long-polls included).",
        ["route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(route, request.method, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return JSONResponse(
            ApiError(422, ApiErrorCode.INVALID_REQUEST, message).body(), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ApiErrorCode.NOT_FOUND if exc.status_code == 404 else ApiErrorCode.INVALID_REQUEST
        return JSONResponse(
            ApiError(exc.status_code, code, str(exc.detail)).body(), status_code=exc.status_code
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(kombu.exceptions.OperationalError)
    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(botocore.exceptions.BotoCoreError)
    @app.exception_handler(client.SubmitError)
    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        error = ApiError(
            503,
            ApiErrorCode.UNAVAILABLE,
            f"a server behind the API cannot be reached ({type(exc).__name__}); try again",
            {"Retry-After": UNAVAILABLE_RETRY_AFTER},
        )
        return JSONResponse(error.body(), status_code=503, headers=error.headers)

    async def authorize(authorization: str | None) -> Caller:
        # A key seen in the last seconds and the rate counter (async Redis) cost no
        # thread-pool hop: on this 2-core machine each hop was ~1 ms of the overhead.
        caller = backend_only(
            keys.remembered(authorization) or await run_in_threadpool(keys.caller, authorization)
        )
        wait_s = await rate.allow(caller.prefix)
        if wait_s:
            raise ApiError(
                429,
                ApiErrorCode.RATE_LIMITED,
                f"more than {settings.api_rate_limit} requests a minute with this key",
                {"Retry-After": str(wait_s)},
            )
        return caller

    def owned_job(caller: Caller, job_id: str) -> client.JobResult | None:
        with sessions() as session:
            job = get_job(session=session, job_id=job_id)
            if job is None or job.api_key_id != caller.key_id:
                return None
            return client.job_result(session=session, job=job)

    def finished_yet(caller: Caller, job_id: str) -> bool | None:
        """One cheap read per poll (the status alone); ``None``: not this caller's job."""
        with sessions() as session:
            row = session.execute(
                select(ClassificationJob.status, ClassificationJob.api_key_id).where(
                    ClassificationJob.id == as_uuid(job_id)
                )
            ).first()
        if row is None or row.api_key_id != caller.key_id:
            return None
        return row.status in TERMINAL_STATUSES

    async def wait_for(caller: Caller, job_id: str, wait: float) -> client.JobResult:
        if as_uuid(job_id) is None:
            raise not_found(f"no job {job_id}")
        started = time.monotonic()
        while wait > 0:
            finished = await run_in_threadpool(finished_yet, caller, job_id)
            if finished is None:
                raise not_found(f"no job {job_id}")
            waited = time.monotonic() - started
            if finished or waited >= wait:
                break
            await asyncio.sleep(min(poll_interval(waited), wait - waited))
        job = await run_in_threadpool(owned_job, caller, job_id)
        if job is None:
            raise not_found(f"no job {job_id}")
        return job

    @app.post(
        "/v1/classifications",
        status_code=202,
        openapi_extra=UPLOAD_BODY,
        responses={200: {"description": "Finished within `wait`: the result."}},
    )
    async def create_classification(
        request: Request,
        response: Response,
        wait: WaitSeconds = 0,
        callback_url: Annotated[
            str | None, Query(description="POST the finished result here, signed.")
        ] = None,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Upload a photo for classification.

        202 with the job's `id` (and `Location`), or 200 with the result when it
        finished within `wait` seconds. The same `Idempotency-Key` with the same
        bytes answers the same job; with other bytes, 409.
        """
        caller = await authorize(authorization)
        if await run_in_threadpool(depth.current) >= settings.api_max_queue_depth:
            raise ApiError(
                429,
                ApiErrorCode.QUEUE_FULL,
                f"more than {settings.api_max_queue_depth} uploads are waiting; try again shortly",
                {"Retry-After": "2"},
            )
        upload = await read_upload(request, limit=settings.max_upload_bytes)
        if not upload.data:
            raise ApiError(400, ErrorCode.EMPTY, "the upload has no bytes")
        callback_url = callback_url or upload.fields.get("callback_url")
        if callback_url:
            try:
                await run_in_threadpool(
                    check_callback_url, callback_url, allow_private=settings.webhook_allow_private
                )
            except CallbackUrlError as exc:
                raise ApiError(400, ApiErrorCode.INVALID_REQUEST, str(exc)) from exc
        try:
            submitted = await run_in_threadpool(
                lambda: client.submit_upload(
                    upload.data,
                    upload.filename,
                    settings=settings,
                    api_key_id=caller.key_id,
                    idempotency_key=idempotency_key,
                    callback_url=callback_url or None,
                    content_type=upload.content_type,
                )
            )
        except client.IdempotencyConflict as exc:
            raise ApiError(409, ApiErrorCode.IDEMPOTENCY_CONFLICT, str(exc)) from exc
        except FashionError as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        response.headers["Location"] = f"/v1/classifications/{submitted.job_id}"
        if not submitted.created:
            response.headers["Idempotent-Replayed"] = "true"
        job = await wait_for(caller, submitted.job_id, wait)
        if job.finished:
            response.status_code = 200
            return client.resource(job)
        return {"id": job.job_id, "status": job.status}

    @app.get("/v1/classifications/{job_id}")
    async def read_classification(
        job_id: str,
        wait: WaitSeconds = 0,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """A job's state and, once done, its label and similar in-stock items; with
        `wait`, answers as soon as it finishes (or after `wait` seconds)."""
        caller = await authorize(authorization)
        return client.resource(await wait_for(caller, job_id, wait))

    @app.delete("/v1/classifications/{job_id}", status_code=204)
    async def delete_classification(
        job_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        """Erase the uploaded photo and the result (a customer's right to erasure)."""
        caller = await authorize(authorization)

        def erase_owned() -> None:
            with sessions() as session:
                job = get_job(session=session, job_id=job_id)
                if job is None or job.api_key_id != caller.key_id:
                    raise not_found(f"no job {job_id}")
                if job.status not in TERMINAL_STATUSES:
                    raise ApiError(
                        409,
                        ApiErrorCode.JOB_NOT_FINISHED,
                        f"job {job_id} is {job.status}; delete it once it has finished",
                    )
                pair = (str(job.id), job.image_key)
            erase(settings, [pair])

        await run_in_threadpool(erase_owned)
        return Response(status_code=204)

    @app.get("/v1/products/{sku}/similar")
    async def product_similar(
        sku: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 5,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """In-stock products most like a catalog product's photo, best first."""
        await authorize(authorization)

        def lookup() -> dict[str, Any]:
            with sessions() as session:
                product = get_product(session=session, sku=sku)
                if product is None:
                    raise not_found(f"no product {sku!r}")
                ranked = similar_to_product(
                    session=session,
                    product=product,
                    top_k=limit,
                    ef_search=settings.similar_ef_search,
                )
                return {
                    "sku": product.sku,
                    "similar": [
                        {
                            "rank": rank,
                            "sku": other.sku,
                            "name": other.name,
                            "score": round(score, 6),
                            "in_stock": other.stock_quantity > 0,
                        }
                        for rank, (other, score) in enumerate(ranked, start=1)
                    ],
                }

        return await run_in_threadpool(lookup)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, Any]:
        """The database, the broker and storage are reachable (503 otherwise)."""
        checks = await run_in_threadpool(readiness, settings)
        ready = all(value == "ok" for value in checks.values())
        if not ready:
            response.status_code = 503
            response.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER
        return {"status": "ok" if ready else "unavailable", **checks}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus: requests, latency, and the upload queue's depth."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    registry.register(DepthCollector(depth))
    registry.register(ReviewCollector(sessions))
    app.include_router(review_router(settings, sessions))
    return app


def poll_interval(waited: float) -> float:
    """Seconds until the next read of a job being waited for, ``waited`` s in."""
    return FIRST_POLL if waited < FAST_POLLING else LAST_POLL


def not_found(message: str) -> ApiError:
    return ApiError(404, ApiErrorCode.NOT_FOUND, message)


def factory() -> FastAPI:
    """For ``uvicorn --factory worker.api.app:factory`` (settings from the environment)."""
    return create_app()
