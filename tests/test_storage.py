from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import Settings
from worker.errors import ObjectMissingError
from worker.storage import InvalidKeyError, LocalStore, S3Store, make_store, validate_key


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../secret", "a/../../b", "a//b", "a/./b", "..hidden", "a b"]
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
