"""Training batches with label-preserving augmentation, in NumPy, for any Keras backend.

``Batches`` is a ``keras.utils.PyDataset``: the same code feeds ``model.fit``
under TensorFlow on this machine's CPUs and under JAX on a GPU machine that has
no TensorFlow (``scripts/train_on_device.py``). Each batch is augmented the way
Zhong et al. ("Random Erasing Data Augmentation", AAAI 2020) train on
Fashion-MNIST: a horizontal flip (p = 0.5), a random shift of up to
``max_shift`` pixels (zero padding, a random 28 × 28 crop), then random erasing —
with probability ``erasing_probability`` a rectangle covering ``erasing_scale``
of the image with an aspect ratio in ``erasing_aspect`` is filled with uniform
noise. Every draw comes from a generator seeded by (seed, epoch, batch), so a run
is reproducible whatever the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    max_shift: int = 3
    erasing_probability: float = 0.5
    erasing_scale: tuple[float, float] = (0.02, 0.15)
    erasing_aspect: tuple[float, float] = (0.3, 1 / 0.3)


def augment(images: np.ndarray, policy: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Augment float images ``(n, h, w, 1)`` in [0, 1]; returns a new array."""
    n, height, width = images.shape[:3]
    out = images.copy()
    if policy.flip:
        flipped = rng.random(n) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    if policy.max_shift:
        pad = policy.max_shift
        padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        top = rng.integers(0, 2 * pad + 1, n)
        left = rng.integers(0, 2 * pad + 1, n)
        rows = top[:, None] + np.arange(height)
        cols = left[:, None] + np.arange(width)
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if policy.erasing_probability:
        out = _erase(out, policy, rng)
    return out


def _erase(images: np.ndarray, policy: Augmentation, rng: np.random.Generator) -> np.ndarray:
    n, height, width = images.shape[:3]
    area = rng.uniform(*policy.erasing_scale, n) * height * width
    log_low, log_high = math.log(policy.erasing_aspect[0]), math.log(policy.erasing_aspect[1])
    aspect = np.exp(rng.uniform(log_low, log_high, n))
    box_h = np.clip(np.round(np.sqrt(area * aspect)), 1, height - 1).astype(int)
    box_w = np.clip(np.round(np.sqrt(area / aspect)), 1, width - 1).astype(int)
    top = (rng.random(n) * (height - box_h + 1)).astype(int)
    left = (rng.random(n) * (width - box_w + 1)).astype(int)
    chosen = rng.random(n) < policy.erasing_probability
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    mask = (
        chosen[:, None, None]
        & (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )[..., None]
    noise = rng.random(images.shape, dtype=np.float32)
    return np.where(mask, noise, images)


class Batches(keras.utils.PyDataset):
    """Shuffled, augmented ``(images, one-hot targets)`` batches; reshuffled every epoch."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        *,
        batch_size: int,
        policy: Augmentation | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.images = images
        self.targets = targets
        self.batch_size = batch_size
        self.policy = policy
        self.seed = seed
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.images[picked]
        if self.policy is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            images = augment(images, self.policy, rng)
        return images, self.targets[picked]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
