from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.config import Settings
from worker.errors import ObjectMissingError
from worker.files import read_at_most
from worker.storage import InvalidKeyError, LocalStore, S3Store, make_store, validate_key


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../secret", "a/../../b", "a//b", "a/./b", "..hidden", "a b", "a/b\n"],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


def test_local_store_round_trip_and_missing_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("uploads/abc.png", b"bytes")
    assert store.get("uploads/abc.png") == b"bytes"
    assert store.exists("uploads/abc.png")
    assert not store.exists("uploads/other")
    with pytest.raises(ObjectMissingError) as excinfo:
        store.get("uploads/other")
    assert excinfo.value.code == "object_missing"


def test_local_store_never_writes_outside_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    with pytest.raises(InvalidKeyError):
        store.put("../escape", b"x")
    assert not (tmp_path / "escape").exists()


def test_s3_store_round_trip_against_a_real_server(service_settings: Settings) -> None:
    store = make_store(service_settings)
    assert isinstance(store, S3Store)
    store.put("uploads/one", b"\x00\x01payload", content_type="image/png")
    assert store.get("uploads/one") == b"\x00\x01payload"
    assert store.exists("uploads/one")
    assert not store.exists("uploads/two")
    # The object lives under the configured prefix, not at the bucket root.
    listed = store.client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["uploads-prefix/uploads/one"]


def test_s3_store_reports_a_missing_object(service_settings: Settings) -> None:
    with pytest.raises(ObjectMissingError):
        make_store(service_settings).get("uploads/never-written")


def test_unknown_storage_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        make_store(Settings(data_dir=tmp_path, storage_url="ftp://host/x"))


def test_a_read_stops_one_byte_past_the_limit_on_both_stores(
    tmp_path: Path, service_settings: Settings
) -> None:
    for store in (LocalStore(tmp_path), make_store(service_settings)):
        store.put("uploads/big", b"x" * 5000)
        store.put("uploads/empty", b"")
        assert store.get("uploads/big", max_bytes=1000) == b"x" * 1001
        assert store.get("uploads/big", max_bytes=10_000) == b"x" * 5000
        assert store.get("uploads/empty", max_bytes=1000) == b""


def test_a_failed_local_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(TypeError):
        store.put("uploads/x", "text, not bytes")  # the write fails half-way
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_reading_a_local_file_refuses_what_is_not_a_regular_file(tmp_path: Path, kind) -> None:
    path = {"fifo": tmp_path / "pipe", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(OSError):
        read_at_most(path, 1000)  # returns at once: no hang on the FIFO, no endless read
