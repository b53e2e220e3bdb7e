"""Compact storage for embeddings: float16, little-endian, in a binary column.

A 256-dimensional unit vector takes 512 bytes; float16 keeps ~3 significant
digits, far more than cosine ranking needs (checked in tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DTYPE = np.dtype("<f2")


def encode_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes]) -> np.ndarray:
    """Stack stored embeddings into a float32 ``(n, d)`` matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), -1).astype(np.float32)
