"""Object storage: one small interface, two backends.

``LocalStore`` keeps objects in a folder (the embedded default); ``S3Store``
talks to AWS S3 or any S3-compatible server (MinIO, moto) through boto3. Keys
are validated the same way for both, so a key that would escape the folder or
the configured prefix is refused before any I/O.
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions

from worker.config import Settings
from worker.errors import ObjectMissingError
from worker.files import read_at_most

_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class InvalidKeyError(ValueError):
    """A storage key that could escape its folder or prefix."""


def validate_key(key: str) -> str:
    """Accept ``part/part/...`` keys of safe characters; no ``..``, no leading slash."""
    parts = key.split("/")
    if not key or len(key) > 512 or not all(_KEY_PART.fullmatch(part) for part in parts):
        raise InvalidKeyError(f"invalid storage key {key!r}")
    if any(part in {".", ".."} or part.startswith("..") for part in parts):
        raise InvalidKeyError(f"invalid storage key {key!r}")
    return key


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, at most ``max_bytes + 1`` of them (enough
        to tell it is too large without reading it all)."""
        ...

    def exists(self, key: str) -> bool: ...


class LocalStore:
    """Objects as files under ``root``; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"storage key {key!r} escapes {self.root}")
        return path

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            try:
                handle.write(data)
            except BaseException:
                Path(handle.name).unlink(missing_ok=True)
                raise
        os.replace(handle.name, path)

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        try:
            return read_at_most(self._path(key), max_bytes)
        except FileNotFoundError as exc:
            raise ObjectMissingError(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3Store:
    """Objects under ``s3://bucket/prefix``, through one boto3 client per process."""

    def __init__(self, bucket: str, prefix: str, client: object) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def _key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        ranged = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes}"}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **ranged)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"NoSuchKey", "404"}:
                raise ObjectMissingError(key) from exc
            if code == "InvalidRange":  # a range of an empty object: it has no bytes
                return b""
            raise
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (development and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.bucket)


def make_s3_client(settings: Settings, *, max_pool_connections: int | None = None) -> object:
    """A boto3 S3 client that also works against S3-compatible servers.

    Path-style addressing, because MinIO and moto do not serve virtual-hosted
    buckets on a bare host:port; request checksums only when the operation
    requires them, because recent boto3 otherwise sends CRC headers many
    non-AWS servers reject.
    """
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        connect_timeout=settings.s3_timeout,
        read_timeout=settings.s3_timeout,
        # Sized to the bulk fetch threads, so none waits for a connection.
        max_pool_connections=max_pool_connections or settings.fetch_threads + 2,
    )
    credentials = {}
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=config,
        **credentials,
    )


def make_store(settings: Settings) -> ObjectStore:
    """The store that ``FASHION_STORAGE_URL`` names; most callers want ``get_store``."""
    parsed = urlparse(settings.resolved_storage_url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError("FASHION_STORAGE_URL must name a bucket: s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, make_s3_client(settings))
    raise ValueError(
        f"unsupported FASHION_STORAGE_URL scheme {parsed.scheme!r}; use file:// or s3://"
    )


@cache
def _store_for(settings: Settings, pid: int) -> ObjectStore:
    return make_store(settings)


def get_store(settings: Settings) -> ObjectStore:
    """This process's object store (boto3 clients do not survive fork): made on first
    use, again after a fork."""
    return _store_for(settings, os.getpid())
