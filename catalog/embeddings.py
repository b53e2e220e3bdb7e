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
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

from catalog.codes import CATEGORIES

DTYPE = np.dtype("<f2")
#: The bundled model's embedding size (v2, two ResNet-20s: 2 × 64), which HNSW
#: indexes serve (migration 0012, which also indexes one ResNet-20's 64). Vectors of
#: another size are stored and searched too, but exactly (a sequential scan) until a
#: migration adds indexes for their size (``hnsw_index_sql``); a test checks the
#: bundled model's size is this one.
INDEXED_DIMENSIONS = 128


def encode_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes]) -> np.ndarray:
    """Stack stored embeddings into a float32 ``(n, d)`` matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), -1).astype(np.float32)


def hnsw_index_name(dimensions: int, category_index: int | None = None) -> str:
    suffix = "" if category_index is None else f"_c{int(category_index)}"
    return f"ix_products_embedding_hnsw_{int(dimensions)}{suffix}"


def hnsw_index_sql(dimensions: int, category: str | None = None) -> str:
    """A partial HNSW index (cosine) over the embeddings of ``dimensions`` -- of one
    category's products when ``category`` is given (one of ``CATEGORIES``)."""
    dimensions = int(dimensions)
    where = f"vector_dims(embedding) = {dimensions}"
    name = hnsw_index_name(dimensions)
    if category is not None:
        index = CATEGORIES.index(category)  # a known category: safe to quote inline
        where += " AND category = '" + category.replace("'", "''") + "'"
        name = hnsw_index_name(dimensions, index)
    return (
        f"CREATE INDEX IF NOT EXISTS {name} ON products "
        f"USING hnsw ((embedding::halfvec({dimensions})) halfvec_cosine_ops) WHERE {where}"
    )


def halfvec_type(dimensions: int | None = None) -> TypeEngine:
    # pgvector's package is imported only where a PostgreSQL column needs it.
    from pgvector.sqlalchemy import HALFVEC

    return HALFVEC(dimensions)


def _float16_texts() -> np.ndarray:
    """The exact decimal text of every float16 value, indexed by its bit pattern."""
    values = np.arange(1 << 16, dtype=np.uint16).view(DTYPE).astype(np.float64)
    return np.array([repr(value) for value in values.tolist()], dtype=object)


_TEXTS: np.ndarray | None = None


def halfvec_text(blob: bytes) -> str:
    """float16 bytes as pgvector's text form, ``[0.5,-1.0,…]``, exactly.

    Through a table of the 65,536 float16 texts: formatting a chunk of 64 × 512
    floats one by one took ~26 ms, a quarter of a bulk chunk's time.
    """
    global _TEXTS
    if _TEXTS is None:
        _TEXTS = _float16_texts()
    return "[" + ",".join(_TEXTS[np.frombuffer(blob, dtype="<u2")]) + "]"


def parse_halfvec_text(text: str) -> bytes:
    return encode_embedding(np.array(text[1:-1].split(","), dtype=np.float32))


class _HalfvecColumn(UserDefinedType):
    """A ``halfvec`` column read and written as pgvector's text form (``Embedding``
    does the conversion); the driver sends the text untyped, the server casts it."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "HALFVEC"


class Embedding(TypeDecorator):
    """float16 bytes in Python; ``halfvec`` on PostgreSQL, the bytes on other engines."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_HalfvecColumn())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return halfvec_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None or dialect.name != "postgresql":
            return value
        return parse_halfvec_text(value)
