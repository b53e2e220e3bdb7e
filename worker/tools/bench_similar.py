"""Benchmark the similar-item lookup on a 100 000-product catalog.

Builds a throw-away catalog (10 categories, 512-d float16 embeddings, ~86 % in
stock) in a fresh PostgreSQL database (default) or SQLite file, then times
``catalog.similar.rank_similar`` for random uploads: warm (the per-process
category cache is valid: one fingerprint query, a matrix product, one product
fetch) and cold (the cache invalidated before every lookup: the baseline that
reads every candidate embedding from the database). Prints one JSON object with
p50/p95/p99 in milliseconds.

Run: ``.venv/bin/python -m worker.tools.bench_similar [--engine postgresql|sqlite] [--products N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from decimal import Decimal

import numpy as np
import psycopg
from sqlalchemy import insert

from catalog import similar
from catalog.codes import CATEGORIES
from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.embeddings import encode_embedding
from catalog.models import Product

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
VERSION = "bench-model"
DIMENSIONS = 512  # the shipped two-member ensemble: 2 × 256


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(pick(0.95), 2),
        "p99": round(pick(0.99), 2),
    }


def build(url: str, count: int, rng: np.random.Generator) -> None:
    upgrade(url)
    vectors = rng.normal(size=(count, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        {
            "sku": f"B-{index:07d}",
            "name": f"item {index}",
            "category": CATEGORIES[index % len(CATEGORIES)],
            "price": Decimal("10.00"),
            "stock_quantity": 0 if index % 7 == 0 else 5,  # ~14 % sold out, every category
            "image_key": None,
            "predicted_label": index % len(CATEGORIES),
            "predicted_confidence": 0.9,
            "model_version": VERSION,
            "embedding": encode_embedding(vectors[index]),
        }
        for index in range(count)
    ]
    with get_sessionmaker(url).begin() as session:
        for start in range(0, count, 10_000):
            session.execute(insert(Product), rows[start : start + 10_000])
    if url.startswith("postgresql"):
        # A live database is analysed by autovacuum; do it now rather than wait.
        with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE products")


def time_lookups(url: str, lookups: int, rng: np.random.Generator, *, cold: bool) -> list[float]:
    timings = []
    sessions = get_sessionmaker(url)
    for _ in range(lookups):
        probabilities = rng.dirichlet(np.full(len(CATEGORIES), 0.3))
        embedding = rng.normal(size=DIMENSIONS).astype(np.float32)
        embedding /= np.linalg.norm(embedding)
        if cold:
            similar._cache.clear()
        started = time.perf_counter()
        with sessions() as session:
            ranked = similar.rank_similar(
                session=session,
                probabilities=probabilities.tolist(),
                embedding=embedding,
                model_version=VERSION,
                uncertain=bool(probabilities.max() < 0.6),
                top_k=5,
            )
        timings.append((time.perf_counter() - started) * 1000)
        if len(ranked) != 5:
            raise AssertionError(f"{len(ranked)} results for {probabilities.round(3)}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=300)
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        if arguments.engine == "sqlite":
            url, name = f"sqlite:///{folder}/bench.sqlite3", None
        else:
            name = f"fashion_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        try:
            started = time.perf_counter()
            build(url, arguments.products, rng)
            build_seconds = time.perf_counter() - started
            time_lookups(url, 20, rng, cold=False)  # warm-up: fill the cache, the pool
            warm = time_lookups(url, arguments.lookups, rng, cold=False)
            cold = time_lookups(url, max(30, arguments.lookups // 5), rng, cold=True)
        finally:
            get_engine(url).dispose()
            if name:
                with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    warm_stats, cold_stats = percentiles(warm), percentiles(cold)
    print(
        json.dumps(
            {
                "engine": arguments.engine,
                "products": arguments.products,
                "dimensions": DIMENSIONS,
                "build_seconds": round(build_seconds, 1),
                "lookup_ms_cached": warm_stats,
                "lookup_ms_uncached": cold_stats,
                "cache_speedup_p50": round(cold_stats["p50"] / warm_stats["p50"], 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
