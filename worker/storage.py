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
from collections.abc import Iterator
from dataclasses import dataclass
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
#: Where the review thumbnail of a photo is kept: beside it, under its own prefix.
THUMBNAILS = "thumbnails/"


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


def thumbnail_key(image_key: str) -> str:
    """The key of the review thumbnail (a JPEG) of the photo stored at ``image_key``."""
    return validate_key(f"{THUMBNAILS}{image_key}.jpg")


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and its version tag: the S3 ETag, or a local file's
    modification time and size. A tag that differs means the content may have
    changed; the same tag means it did not."""

    data: bytes
    etag: str | None


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, at most ``max_bytes + 1`` of them (enough
        to tell it is too large without reading it all)."""
        ...

    def fetch(self, key: str, *, max_bytes: int | None = None) -> StoredObject:
        """``get``, with the version tag of what was read."""
        ...

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, version tag) of every object whose key starts with ``prefix``; on S3
        one listing request per 1,000 keys, no object read."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...


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
        return self.fetch(key, max_bytes=max_bytes).data

    def fetch(self, key: str, *, max_bytes: int | None = None) -> StoredObject:
        path = self._path(key)
        try:
            # Tagged before reading: if the file is replaced in between, the tag is
            # the older one and the next comparison sees a change (never misses one).
            etag = _file_etag(path.stat())
            return StoredObject(read_at_most(path, max_bytes), etag)
        except FileNotFoundError as exc:
            raise ObjectMissingError(key) from exc

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        top = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        folder = top if prefix.endswith("/") or top.is_dir() else top.parent
        if not folder.is_dir():
            return
        for path in folder.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and path.is_file() and not path.is_symlink():
                yield key, _file_etag(path.stat())

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


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
        return self.fetch(key, max_bytes=max_bytes).data

    def fetch(self, key: str, *, max_bytes: int | None = None) -> StoredObject:
        ranged = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes}"}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **ranged)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"NoSuchKey", "404"}:
                raise ObjectMissingError(key) from exc
            if code == "InvalidRange":  # a range of an empty object: it has no bytes
                return StoredObject(b"", None)
            raise
        # A ranged GET still carries the whole object's ETag.
        return StoredObject(response["Body"].read(), response.get("ETag"))

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        # ListObjects (v1): the same 1,000 keys with their ETags per request as v2, and
        # it pages correctly on every S3-compatible server here (s3rver answers v2
        # with HTTP 500 once a listing is truncated: jamhall/s3rver#814).
        pages = self.client.get_paginator("list_objects").paginate(Bucket=self.bucket, Prefix=full)
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"][strip:], item["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        # S3's DeleteObject answers 204 whether or not the key exists.
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (development and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.bucket)


def _file_etag(stat: os.stat_result) -> str:
    return f"{stat.st_mtime_ns:x}-{stat.st_size:x}"


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
