"""Fashion-MNIST loading from the four standard IDX ``.gz`` files.

Nothing here downloads: the files come from ``FASHION_MNIST_DIR``, the folder the
Debian package ``dataset-fashion-mnist`` installs, or the Keras cache, in that
order. The 10 k test split is returned separately and must only ever be used for
the final, reported evaluation -- never for model selection or early stopping.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog.codes import CATEGORIES

CLASS_NAMES = CATEGORIES
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = Path.home() / ".keras" / "datasets" / "fashion-mnist"

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


class DatasetNotFoundError(RuntimeError):
    """The four Fashion-MNIST files are in none of the places we look."""


class DatasetFormatError(RuntimeError):
    """A Fashion-MNIST file exists but does not hold what it should."""


@dataclass(frozen=True)
class FashionMnist:
    """The standard split: 60 k training and 10 k test images, uint8 ``(n, 28, 28)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path


def candidate_dirs(configured_dir: Path | None = None) -> list[Path]:
    """Folders searched for the dataset: ``FASHION_MNIST_DIR`` first, if set."""
    dirs = [Path(configured_dir)] if configured_dir else []
    return [*dirs, DEBIAN_DIR, KERAS_CACHE_DIR]


def find_dataset_dir(configured_dir: Path | None = None) -> Path:
    """Return the first folder holding all four IDX files, or explain how to get them."""
    searched = candidate_dirs(configured_dir)
    for folder in searched:
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    looked = ", ".join(str(folder) for folder in searched)
    raise DatasetNotFoundError(
        "Fashion-MNIST was not found. We looked for the four files "
        f"{', '.join(FILES.values())} in: {looked}. Install them with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
        "them from https://github.com/zalandoresearch/fashion-mnist and point "
        "FASHION_MNIST_DIR at the folder that holds them. Nothing is downloaded "
        "at run time."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file (images ``(n, 28, 28)`` or labels ``(n,)``)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 8:
        raise DatasetFormatError(f"{path} is too short to be an IDX file")
    magic, count = struct.unpack(">II", data[:8])
    if magic == _IDX_LABELS_MAGIC:
        array = np.frombuffer(data, dtype=np.uint8, offset=8)
        expected_shape: tuple[int, ...] = (count,)
    elif magic == _IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        array = np.frombuffer(data, dtype=np.uint8, offset=16)
        expected_shape = (count, rows, cols)
    else:
        raise DatasetFormatError(f"{path} has an unknown IDX magic number {magic}")
    if array.size != int(np.prod(expected_shape)):
        raise DatasetFormatError(
            f"{path} holds {array.size} values, its header promises {expected_shape}"
        )
    return array.reshape(expected_shape)


def load_fashion_mnist(configured_dir: Path | None = None) -> FashionMnist:
    """Load and check the standard split (shapes 60000/10000 × 28 × 28, labels 0–9).

    ``configured_dir`` is ``FASHION_MNIST_DIR``; the usual places are searched after it.
    """
    folder = find_dataset_dir(configured_dir)
    arrays = {key: read_idx(folder / name) for key, name in FILES.items()}
    expected = {
        "train_images": (60_000, IMAGE_SIZE, IMAGE_SIZE),
        "train_labels": (60_000,),
        "test_images": (10_000, IMAGE_SIZE, IMAGE_SIZE),
        "test_labels": (10_000,),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise DatasetFormatError(
                f"{folder / FILES[key]} has shape {arrays[key].shape}, expected {shape}"
            )
    for key in ("train_labels", "test_labels"):
        if arrays[key].max() >= NUM_CLASSES:
            raise DatasetFormatError(
                f"{folder / FILES[key]} has label {arrays[key].max()}, expected 0–9"
            )
    return FashionMnist(source=folder, **arrays)


def validation_indices(count: int, *, validation_size: int, seed: int) -> np.ndarray:
    """Which of ``count`` training images a run with ``seed`` holds out for validation."""
    if not 0 < validation_size < count:
        raise ValueError(f"validation_size must be in 1..{count - 1}")
    return np.random.default_rng(seed).permutation(count)[:validation_size]


def split_seed_of(card: dict) -> int:
    """The seed of a run's validation split (its model card or ``fit.json``)."""
    return card.get("split_seed", card["seed"])


def held_out_by(card: dict, count: int) -> np.ndarray:
    """The training images a run (its model card or ``fit.json``) held out for validation."""
    return validation_indices(
        count, validation_size=card["recipe"]["validation_size"], seed=split_seed_of(card)
    )


def train_validation_split(
    images: np.ndarray, labels: np.ndarray, *, validation_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a stratification-free random validation set out of the training split."""
    validation_index = validation_indices(len(images), validation_size=validation_size, seed=seed)
    train_index = np.random.default_rng(seed).permutation(len(images))[validation_size:]
    return (
        images[train_index],
        labels[train_index],
        images[validation_index],
        labels[validation_index],
    )


def dataset_sha256(folder: Path) -> str:
    """One digest over the four files, in a fixed order: which data a model saw."""
    digest = hashlib.sha256()
    for name in sorted(FILES.values()):
        digest.update(name.encode())
        digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
    return digest.hexdigest()
