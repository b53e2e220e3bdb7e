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
