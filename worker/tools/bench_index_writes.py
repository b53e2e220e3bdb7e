"""What the similar-item indexes cost a bulk chunk, and what a candidate's fill saves.

Loads a catalog like ``bench_similar`` (real model embeddings, the live version's
ten (version, category) HNSW indexes) into a PostgreSQL with pgvector of its own,
then times ``catalog.predictions.record_predictions`` -- the one upsert a chunk of
64 products ends with, new embeddings included -- twice: rewriting the live
version's rows, which go into its graphs (what every new model's run cost when a
product had one embedding column), and writing a candidate version's rows, which
match no index's predicate (a fill since docs/rollout.md). Prints the median and
p90 milliseconds per chunk of each.

Run: ``.venv/bin/python -m worker.tools.bench_index_writes [--products 100000]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import ExitStack

import numpy as np

from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.predictions import ProductOutcome, record_predictions
from worker.tools import bench_similar
from worker.tools.harness import pgvector_server, throwaway_database

CHUNK = 64


def time_chunks(
    url: str, catalog: bench_similar.Catalog, chunks: int, version: str
) -> dict[str, float]:
    sessions = get_sessionmaker(url)
    rng = np.random.default_rng(2)
    count = len(catalog.vectors)
    timings = []
    for _ in range(chunks):
        ids = rng.choice(count, CHUNK, replace=False) + 1
        outcomes = [
            ProductOutcome(
                int(i), label=1, confidence=0.9, embedding=catalog.vectors[rng.integers(count)]
            )
            for i in ids
        ]
        started = time.perf_counter()
        with sessions.begin() as session:
            record_predictions(session=session, model_version=version, outcomes=outcomes)
        timings.append((time.perf_counter() - started) * 1000)
    ordered = sorted(timings)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[int(0.9 * len(ordered))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=60)
    arguments = parser.parse_args()
    with ExitStack() as stack:
        admin = stack.enter_context(pgvector_server({"shared_buffers": "2GB"}))
        url = stack.enter_context(throwaway_database(admin))
        upgrade(url)
        catalog = bench_similar.make_catalog(arguments.products, 50, np.random.default_rng(0))
        bench_similar.load_postgresql(url, catalog, "category")
        into_graphs = time_chunks(url, catalog, arguments.chunks, bench_similar.VERSION)
        candidate = time_chunks(url, catalog, arguments.chunks, "new-model")
        get_engine(url).dispose()
    print(
        json.dumps(
            {
                "products": arguments.products,
                "chunk": CHUNK,
                "live_rows_into_hnsw_graphs": into_graphs,
                "candidate_fill_no_graph": candidate,
                "ratio_median": round(into_graphs["median_ms"] / candidate["median_ms"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
