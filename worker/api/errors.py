"""Errors the HTTP API answers with: ``{"error": {"code", "message"}}``.

An upload's own problems use the product's error codes (``catalog.codes.ErrorCode``:
``too_large``, ``unsupported_format``, ``empty``); the rest are the API's:

    unauthorized          401  no or an unknown/revoked API key
    forbidden             403  a reviewer's key on the API; a review form without its CSRF token
    not_found             404  no such job or product (or not this key's)
    idempotency_conflict  409  the Idempotency-Key was used with other bytes
    job_not_finished      409  DELETE of a job still queued or running
    invalid_request       400/422  a malformed parameter or callback_url
    rate_limited          429  this key's requests per minute (Retry-After)
    queue_full            429  more uploads wait than FASHION_API_MAX_QUEUE_DEPTH (Retry-After)
    unavailable           503  the database, broker or storage cannot be reached (Retry-After)
"""

from __future__ import annotations

from enum import StrEnum, unique
from typing import Any

from pydantic import BaseModel


@unique
class ApiErrorCode(StrEnum):
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    JOB_NOT_FINISHED = "job_not_finished"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    UNAVAILABLE = "unavailable"


class ApiError(Exception):
    """Answered as ``status`` with ``{"error": {"code", "message"}}`` and ``headers``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = str(code)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message"}}`` (codes above)."""

    error: ErrorDetail


#: What each error status means, as the OpenAPI schema says it.
ERROR_STATUSES = {
    400: "The upload or a parameter is refused (its code says why).",
    401: "No API key, or an unknown or revoked one.",
    403: "A reviewer's key: it logs in to /review, not the API.",
    404: "No such job or product (or not this key's).",
    409: "An Idempotency-Key used with other bytes, or a job not finished yet.",
    413: "The upload is over FASHION_MAX_UPLOAD_BYTES.",
    415: "The body is not an image.",
    422: "A malformed parameter.",
    429: "Too many requests with this key, or too many uploads waiting (Retry-After).",
    503: "The database, broker or storage cannot be reached (Retry-After).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer these error statuses."""
    return {
        status: {"model": ErrorBody, "description": ERROR_STATUSES[status]} for status in statuses
    }
