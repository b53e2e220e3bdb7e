"""Reading an upload from a request, with Starlette's own ``Request`` over an ASGI
``receive`` that plays the client."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.requests import Request

from worker.api.errors import ApiError
from worker.api.uploads import read_upload


def request_that_hangs_up(after: bytes) -> Request:
    """A PNG upload whose client sends ``after`` and then disconnects."""
    messages = [
        {"type": "http.request", "body": after, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classifications",
        "headers": [(b"content-type", b"image/png")],
        "query_string": b"",
    }
    return Request(scope, receive)


def test_a_client_that_hangs_up_mid_body_is_a_line_at_info_not_a_traceback(caplog) -> None:
    with (
        caplog.at_level(logging.INFO, logger="worker.api.uploads"),
        pytest.raises(ApiError) as raised,
    ):
        asyncio.run(read_upload(request_that_hangs_up(b"\x89PNG" * 100), limit=10_000))
    assert raised.value.status == 400
    (record,) = [r for r in caplog.records if r.name == "worker.api.uploads"]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "hung up after 400 bytes" in record.getMessage()
