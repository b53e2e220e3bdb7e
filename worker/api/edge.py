"""What every request must be before any route sees it: no control characters in its
path or query values.

A NUL in a SKU (``/v1/products/TEE-001%00/similar``) reached PostgreSQL, which
cannot store one, and came back as a 500 with a psycopg traceback. Refused here,
once, for every route: 400 ``invalid_request`` in the API's error format.
"""

from __future__ import annotations

import json
import unicodedata
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from worker.api.errors import ApiError, ApiErrorCode


def has_control_character(text: str) -> bool:
    return any(unicodedata.category(character) == "Cc" for character in text)


class RefuseControlCharacters:
    """Pure ASGI middleware (no per-request task or body wrapping)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote_plus(scope.get("query_string", b"").decode("latin-1"))
            if has_control_character(scope["path"]) or has_control_character(query):
                error = ApiError(
                    400,
                    ApiErrorCode.INVALID_REQUEST,
                    "the request's path or query contains a control character",
                )
                body = json.dumps(error.body()).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
