"""Errors an upload or a job can end with, each with a stable code.

The codes are ``catalog.codes.ErrorCode``, the one list of every code the system
writes; they appear in ``fashion classify --json`` output, in the ``error_code``
column of a failed job and in a product prediction's ``error``, and the web
backend may branch on them. Never rename one. Raised or recorded as:

    FashionError
    ├── ImageError            the upload itself is bad; permanent, never retried
    │     empty               0 bytes
    │     too_large           more bytes than FASHION_MAX_UPLOAD_BYTES
    │     too_many_pixels     width × height above FASHION_MAX_IMAGE_PIXELS
    │     too_small           a side shorter than 8 pixels
    │     unsupported_format  not an image, or a format outside the allow-list
    │     corrupt             a known format that fails to decode
    │     blank               one uniform colour: no item to classify
    │     unreadable          (fashion classify only) the local file cannot be read
    ├── ObjectMissingError    object_missing: the job's image key is not in storage
    ├── JobNotFoundError      job_not_found: no such job id
    └── FashionError itself   no_photo: a catalog product without a photo

    recorded, never raised to a caller
          enqueue_failed      the broker could not be reached at submission
          expired             not started within FASHION_JOB_DEADLINE_SECONDS of submission
          retries_exhausted   a transient error outlasted its retries
          internal_error      a bug: the job that caused it ends failed, not lost
          poison              delivered more than FASHION_MAX_ATTEMPTS times unfinished

Transient failures (storage, database or broker unreachable) are not
``FashionError``: they keep their library's exception type so the retry policy
(``worker.service.retry``) can retry them.
"""

from __future__ import annotations

from catalog.codes import ErrorCode

__all__ = ["ErrorCode", "FashionError", "ImageError", "JobNotFoundError", "ObjectMissingError"]


class FashionError(Exception):
    """Base class: a failure with a stable ``code`` and a human ``message``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message


class ImageError(FashionError):
    """The uploaded bytes cannot be classified; retrying will not help."""


class ObjectMissingError(FashionError):
    """The object a job refers to does not exist in storage."""

    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.OBJECT_MISSING, f"no object stored under key {key!r}")
        self.key = key


class JobNotFoundError(FashionError):
    """No job with the given id exists in the catalog."""

    def __init__(self, job_id: str) -> None:
        super().__init__(ErrorCode.JOB_NOT_FOUND, f"no job with id {job_id!r}")
        self.job_id = job_id
