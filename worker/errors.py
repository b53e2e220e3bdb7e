"""Errors an upload or a job can end with, each with a stable code.

The codes are part of the public contract: they appear in ``fashion classify
--json`` output and in the ``error_code`` column of a failed job, and the web
backend may branch on them. Never rename one.

    FashionError
    ├── ImageError            the upload itself is bad; permanent, never retried
    │     empty               0 bytes
    │     too_large           more bytes than FASHION_MAX_UPLOAD_BYTES
    │     too_many_pixels     width × height above FASHION_MAX_IMAGE_PIXELS
    │     unsupported_format  not an image, or a format outside the allow-list
    │     corrupt             a known format that fails to decode
    │     unreadable          (fashion classify only) the local file cannot be read
    ├── ObjectMissingError    object_missing: the job's image key is not in storage
    └── JobNotFoundError      job_not_found: no such job id

Transient failures (storage, database or broker unreachable) are not
``FashionError``: they keep their library's exception type so Celery's
``autoretry_for`` can retry them.
"""

from __future__ import annotations


class FashionError(Exception):
    """Base class: a failure with a stable ``code`` and a human ``message``."""

    code = "error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ImageError(FashionError):
    """The uploaded bytes cannot be classified; retrying will not help."""


class ObjectMissingError(FashionError):
    """The object a job refers to does not exist in storage."""

    def __init__(self, key: str) -> None:
        super().__init__("object_missing", f"no object stored under key {key!r}")
        self.key = key


class JobNotFoundError(FashionError):
    """No job with the given id exists in the catalog."""

    def __init__(self, job_id: str) -> None:
        super().__init__("job_not_found", f"no job with id {job_id!r}")
        self.job_id = job_id
