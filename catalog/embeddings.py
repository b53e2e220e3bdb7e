"""How embeddings are stored: float16, one per product, searchable where the engine can.

In Python an embedding is always the same value: float16 little-endian bytes
(``encode_embedding``), 512 bytes for a 256-dimensional unit vector; float16
keeps ~3 significant digits, far more than cosine ranking needs (checked in
tests). The column type, ``Embedding``, stores it natively per engine:

- PostgreSQL: pgvector's ``halfvec`` (same float16 values), so the database
  searches it with an HNSW index (``catalog.similar``);
- SQLite: the bytes as they are, searched exactly with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

DTYPE = np.dtype("<f2")
#: The embedding size the HNSW index is built for: the bundled model's (two members
#: × 256). Vectors of another size are stored and searched too, but exactly (a
#: sequential scan) until a migration adds an index for their size (``hnsw_index_sql``).
INDEXED_DIMENSIONS = 512


def encode_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes]) -> np.ndarray:
    """Stack stored embeddings into a float32 ``(n, d)`` matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), -1).astype(np.float32)


def hnsw_index_sql(dimensions: int) -> str:
    """The partial HNSW index (cosine) over the embeddings of ``dimensions``."""
    dimensions = int(dimensions)
    return (
        f"CREATE INDEX IF NOT EXISTS ix_products_embedding_hnsw_{dimensions} ON products "
        f"USING hnsw ((embedding::halfvec({dimensions})) halfvec_cosine_ops) "
        f"WHERE vector_dims(embedding) = {dimensions}"
    )


def halfvec_type(dimensions: int | None = None) -> TypeEngine:
    # pgvector's package is imported only where a PostgreSQL column needs it.
    from pgvector.sqlalchemy import HALFVEC

    return HALFVEC(dimensions)


class Embedding(TypeDecorator):
    """float16 bytes in Python; ``halfvec`` on PostgreSQL, the bytes on other engines."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(halfvec_type())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return np.frombuffer(value, dtype=DTYPE).astype(np.float32)

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None or dialect.name != "postgresql":
            return value
        # pgvector hands back a list of floats (a HalfVector in some versions).
        values = value.to_numpy() if hasattr(value, "to_numpy") else value
        return encode_embedding(np.asarray(values, dtype=np.float32))
