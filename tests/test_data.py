from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import (
    FILES,
    DatasetFormatError,
    DatasetNotFoundError,
    find_dataset_dir,
    read_idx,
    train_validation_split,
)


def test_fashion_mnist_has_the_standard_shapes_and_labels(fashion_mnist) -> None:
    assert fashion_mnist.train_images.shape == (60_000, 28, 28)
    assert fashion_mnist.test_images.shape == (10_000, 28, 28)
    assert fashion_mnist.train_images.dtype == np.uint8
    assert set(np.unique(fashion_mnist.train_labels)) == set(range(10))
    assert np.bincount(fashion_mnist.test_labels).tolist() == [1000] * 10


def test_missing_dataset_explains_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("training.data.DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr("training.data.KERAS_CACHE_DIR", tmp_path / "keras")
    with pytest.raises(DatasetNotFoundError) as excinfo:
        find_dataset_dir(tmp_path / "configured")
    message = str(excinfo.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FASHION_MNIST_DIR" in message
    assert str(tmp_path / "configured") in message


def test_configured_dir_is_searched_first(tmp_path: Path, fashion_mnist) -> None:
    for name in FILES.values():
        (tmp_path / name).symlink_to(fashion_mnist.source / name)
    assert find_dataset_dir(tmp_path) == tmp_path


def test_idx_with_unknown_magic_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 1234, 0)))
    with pytest.raises(DatasetFormatError, match="magic"):
        read_idx(path)


def test_idx_shorter_than_its_header_promises_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 2, 28, 28) + bytes(100)))
    with pytest.raises(DatasetFormatError, match="promises"):
        read_idx(path)


def test_validation_split_is_disjoint_and_deterministic() -> None:
    images = np.arange(100).reshape(100, 1, 1)
    labels = np.arange(100)
    first = train_validation_split(images, labels, validation_size=20, seed=3)
    second = train_validation_split(images, labels, validation_size=20, seed=3)
    train_labels, validation_labels = first[1], first[3]
    assert len(validation_labels) == 20 and len(train_labels) == 80
    assert not set(train_labels) & set(validation_labels)
    assert np.array_equal(first[3], second[3])
