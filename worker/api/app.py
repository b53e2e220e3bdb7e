"""The FastAPI application: uploads in, results out, over HTTP with an API key.

``create_app`` only assembles: the shared parts (``deps.Services``), the request
metrics, the error handlers, and one router per resource — ``routes.classifications``,
``routes.products``, ``routes.health`` and the review page (``review``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import botocore.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog.db import get_sessionmaker
from worker import client, tracing
from worker.api import review
from worker.api.deps import Services
from worker.api.edge import RefuseControlCharacters
from worker.api.errors import ApiError, ApiErrorCode, error_responses
from worker.api.observability import DepthCollector, ReviewCollector
from worker.api.routes import classifications, health, models, products
from worker.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    tracing.configure("fashion-api")  # before the engines and clients exist
    app = FastAPI(
        title="Fashion classifier",
        version="1",
        description="Classify clothing photos and offer similar in-stock items. "
        "Authenticate with `Authorization: Bearer <API key>` (`fashion api-key create`).",
        # Any route: a control character in the path or query (worker.api.edge).
        responses=error_responses(400),
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    sessions = get_sessionmaker(settings.resolved_database_url)
    app.state.services = services = Services.for_settings(settings, sessions)
    app.state.registry = registry = CollectorRegistry()
    registry.register(DepthCollector(services.depth))
    registry.register(ReviewCollector(sessions))
    _count_requests(app, registry)
    _answer_errors(app)
    app.add_middleware(RefuseControlCharacters)
    app.include_router(classifications.router)
    app.include_router(products.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(review.router)
    tracing.instrument_app(app)
    return app


def _count_requests(app: FastAPI, registry: CollectorRegistry) -> None:
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


def _answer_errors(app: FastAPI) -> None:
    """Every error as ``{"error": {"code", "message"}}`` (``worker.api.errors``)."""

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
            ApiError(exc.status_code, code, str(exc.detail)).body(),
            status_code=exc.status_code,
            headers=exc.headers,  # e.g. a 405's Allow
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
            {"Retry-After": health.UNAVAILABLE_RETRY_AFTER},
        )
        return JSONResponse(error.body(), status_code=503, headers=error.headers)


def factory() -> FastAPI:
    """For ``uvicorn --factory worker.api.app:factory`` (settings from the environment)."""
    return create_app()
