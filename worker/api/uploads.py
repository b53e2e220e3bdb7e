"""An upload read from a request: the raw body (``Content-Type: image/*``) or the
multipart field ``file``, never more than ``FASHION_MAX_UPLOAD_BYTES`` held.

A declared ``Content-Length`` over the limit is refused before a byte is read; a
chunked body is counted as it streams and refused the moment it passes the
limit, so a 30 MB body costs the server no more than the limit. A client that
hangs up mid-body is logged at INFO, without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from catalog.codes import ErrorCode
from worker.api.errors import ApiError, ApiErrorCode

log = logging.getLogger(__name__)

#: Room for a multipart body's boundaries and part headers.
MULTIPART_OVERHEAD = 64 * 1024
#: What a multipart part may declare besides ``image/*``: many clients send this.
GENERIC_TYPES = {"", "application/octet-stream"}


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str
    content_type: str
    fields: dict[str, str]


def too_large(limit: int) -> ApiError:
    return ApiError(413, ErrorCode.TOO_LARGE, f"the upload is larger than {limit} bytes")


def not_an_image(content_type: str) -> ApiError:
    return ApiError(
        415,
        ErrorCode.UNSUPPORTED_FORMAT,
        f"send an image (Content-Type: image/*, or multipart field 'file'), not {content_type!r}",
    )


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            yield chunk
    except ClientDisconnect as exc:
        # Nobody is left to answer, and nothing was stored: a line, not a traceback.
        log.info("the client hung up after %d bytes of its upload", received)
        raise ApiError(
            400, ApiErrorCode.INVALID_REQUEST, "the client hung up before the body ended"
        ) from exc


async def read_upload(request: Request, *, limit: int) -> Upload:
    """The uploaded image, or an ``ApiError`` (413, 415, 400)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    multipart = media_type == "multipart/form-data"
    if not (media_type.startswith("image/") or multipart):
        raise not_an_image(media_type)
    allowed = limit + (MULTIPART_OVERHEAD if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > allowed:
        raise too_large(limit)
    if not multipart:
        data = b"".join([chunk async for chunk in _limited(request, limit)])
        return Upload(data, request.query_params.get("filename", "upload"), media_type, {})
    parser = MultiPartParser(request.headers, _limited(request, allowed), max_files=1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(
            400, ApiErrorCode.INVALID_REQUEST, f"malformed multipart body: {exc}"
        ) from exc
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ApiError(400, ApiErrorCode.INVALID_REQUEST, "multipart field 'file' is missing")
        part_type = (part.content_type or "").split(";")[0].strip().lower()
        if not (part_type.startswith("image/") or part_type in GENERIC_TYPES):
            raise not_an_image(part_type)
        data = await part.read()
        if len(data) > limit:
            raise too_large(limit)
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        return Upload(data, part.filename or "upload", part_type or "image/*", fields)
    finally:
        await form.close()
