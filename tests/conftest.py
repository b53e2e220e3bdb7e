"""Shared fixtures: the real services and small factories.

Redis is the machine's own (``scripts/test`` starts it when it is down).
PostgreSQL is a server with pgvector that the test session starts for itself
(``worker.tools.harness.pgvector_server``: the machine's PostgreSQL has no
pgvector, which the catalog's similar-item search needs); each test gets a
database of its own on it, and queue names of its own on Redis, so nothing
collides with other users of those servers. The S3 server
is moto in server mode, a separate process bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from catalog.api_keys import NewKey, create_api_key
from catalog.codes import JobStatus, KeyScope, ReviewAnswer, ReviewQueue
from catalog.db import get_engine, get_sessionmaker, upgrade
from catalog.embeddings import encode_embedding
from catalog.models import CATEGORIES, ApiKey, ClassificationJob, Product, Review
from catalog.queries import upsert_product
from catalog.reviews import record_answer
from training.data import FashionMnist, load_fashion_mnist
from worker.config import Settings, get_settings
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
from worker.service.celery_app import worker_command, worker_environment
from worker.storage import make_store
from worker.tools import harness
from worker.tools.harness import ApiProcess, free_port, pgvector_server, wait_for_port

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
S3_CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


@pytest.fixture(scope="session")
def fashion_mnist() -> FashionMnist:
    return load_fashion_mnist()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


_postgres = ExitStack()


@cache
def postgres_admin_url() -> str:
    """The session's PostgreSQL with pgvector, started on first use (stopped at exit)."""
    return _postgres.enter_context(pgvector_server())


def pytest_sessionfinish(session: pytest.Session) -> None:
    _postgres.close()


def create_database() -> str:
    """A new, empty database on the session's PostgreSQL; returns its SQLAlchemy URL."""
    return harness.create_database(postgres_admin_url())


def drop_database(url: str) -> None:
    get_engine(url).dispose()
    harness.drop_database(postgres_admin_url(), make_url(url).database)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    client.ping()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible HTTP server in its own process, on 127.0.0.1 only."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture()
def local_settings(tmp_path: Path) -> Settings:
    """Embedded defaults in a temporary folder: SQLite, local objects, filesystem broker."""
    settings = Settings(data_dir=tmp_path / "data")
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture()
def cli_env(local_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The embedded defaults in a temporary folder, as the CLI reads them from the environment."""
    for key in ("FASHION_DATABASE_URL", "FASHION_BROKER_URL", "FASHION_STORAGE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FASHION_DATA_DIR", str(local_settings.data_dir))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture()
def service_settings(tmp_path: Path, redis_url: str, s3_endpoint: str) -> Iterator[Settings]:
    """Production-like settings: PostgreSQL, Redis and S3, isolated per test.

    Each test gets its own database, bucket and queue names.
    """
    suffix = uuid.uuid4().hex[:8]
    database_url = create_database()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=redis_url,
        storage_url=f"s3://fashion-{suffix}/uploads-prefix",
        s3_endpoint_url=s3_endpoint,
        interactive_queue=f"interactive-{suffix}",
        bulk_queue=f"bulk-{suffix}",
        webhook_queue=f"webhooks-{suffix}",
        **S3_CREDENTIALS,
    )
    make_store(settings).ensure_bucket()
    upgrade(settings.resolved_database_url)
    yield settings
    drop_database(database_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both engines: a SQLite file and the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    else:
        # A database per test keeps the PostgreSQL runs as independent as SQLite's.
        url = create_database()
        request.addfinalizer(lambda: drop_database(url))
    upgrade(url)
    return url


@pytest.fixture()
def postgresql_url() -> Iterator[str]:
    """A migrated database of its own on the session's PostgreSQL (with pgvector)."""
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture()
def session(database_url: str) -> Iterator[Session]:
    with get_sessionmaker(database_url).begin() as session:
        yield session


def make_product(
    session: Session,
    *,
    sku: str | None = None,
    category: str = "Trouser",
    stock_quantity: int = 5,
    price: str = "19.99",
    embedding: np.ndarray | None = None,
    model_version: str | None = None,
) -> Product:
    """A product; with ``embedding`` and ``model_version`` it looks already classified."""
    product = upsert_product(
        session=session,
        sku=sku or f"SKU-{uuid.uuid4().hex[:8]}",
        name=f"{category} sample",
        category=category,
        price=Decimal(price),
        stock_quantity=stock_quantity,
        image_key=None,
    )
    if embedding is not None:
        product.embedding = encode_embedding(embedding / np.linalg.norm(embedding))
        product.model_version = model_version
        product.predicted_label = CATEGORIES.index(category)
        product.predicted_confidence = 0.9
        session.flush()
    return product


def make_flagged_upload(
    session: Session,
    *,
    probabilities: list[float] | None = None,
    image_key: str | None = None,
    filename: str = "upload.jpg",
) -> ClassificationJob:
    """A finished upload the model flagged ``uncertain`` (top class: the largest of
    ``probabilities``, by default Pullover 0.55 against Coat 0.40)."""
    if probabilities is None:
        probabilities = [0.0, 0.0, 0.55, 0.0, 0.40, 0.0, 0.05, 0.0, 0.0, 0.0]
    job_id = uuid.uuid4()
    label = int(np.argmax(probabilities))
    job = ClassificationJob(
        id=job_id,
        image_key=image_key or f"uploads/{job_id}",
        filename=filename,
        content_sha256=uuid.uuid4().hex * 2,
        status=JobStatus.DONE.value,
        label=label,
        confidence=float(probabilities[label]),
        uncertain=True,
        probabilities=probabilities,
        model_version="test-model",
        attempts=1,
        finished_at=dt.datetime.now(dt.UTC),
    )
    session.add(job)
    session.flush()
    return job


def make_reviewer(session: Session, name: str = "alice") -> ApiKey:
    """A reviewer-scope API key's row (its key is not needed in data tests)."""
    create_api_key(session=session, name=name, scope=KeyScope.REVIEWER)
    return session.scalar(select(ApiKey).where(ApiKey.name == name))


def answer(
    session: Session,
    reviewer: ApiKey,
    item: ClassificationJob | Product,
    given: ReviewAnswer,
    label: int | None = None,
    *,
    queue: ReviewQueue = ReviewQueue.UPLOADS,
) -> Review:
    """``reviewer``'s answer about an upload (or, with ``queue``, a product)."""
    return record_answer(
        session=session,
        reviewer=reviewer,
        queue=queue,
        item_id=str(item.id),
        answer=given,
        label=label,
    )


@pytest.fixture(scope="session")
def bundled_model() -> tuple[str, int]:
    """(version, embedding size) of the model the worker ships with."""
    classifier = Classifier(BUNDLED_MODEL)
    outputs = classifier.run(np.zeros((1, 28, 28, 1), dtype=np.float32))
    return classifier.version, outputs.embeddings.shape[1]


def random_embedding(size: int, seed: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=size).astype(np.float32)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a `celery worker` subprocess that mirrors ``settings``."""
    return worker_environment(settings)


@pytest.fixture()
def start_worker() -> Iterator:
    """Start real `celery worker` processes; all are stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(
        settings: Settings,
        *,
        pool: str = "prefork",
        concurrency: int = 1,
        queues: str = "interactive",
        prefetch: int = 1,
    ) -> subprocess.Popen:
        names = {
            "interactive": [settings.interactive_queue],
            "bulk": [settings.bulk_queue],
            "both": [settings.interactive_queue, settings.bulk_queue],
            "uploads+webhooks": [settings.interactive_queue, settings.webhook_queue],
        }[queues]
        process = subprocess.Popen(
            worker_command(
                settings,
                names,
                hostname=f"test-{uuid.uuid4().hex[:6]}",
                concurrency=concurrency,
                prefetch=prefetch,
                extra=(f"--pool={pool}",),
            ),
            env=worker_env(settings),
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def start_beat() -> Iterator:
    """Start a real `fashion beat` for ``settings``; stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(settings: Settings) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "beat", "--loglevel=INFO"],
            env=worker_env(settings),
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


@pytest.fixture()
def start_api() -> Iterator:
    """Start real ``fashion api`` processes; all are stopped after the test."""
    servers: list[ApiProcess] = []

    def start(settings: Settings, **env: str) -> ApiProcess:
        server = ApiProcess(settings, extra_env={f"FASHION_{k.upper()}": v for k, v in env.items()})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make_key(settings: Settings, name: str = "web", scope: KeyScope = KeyScope.BACKEND) -> NewKey:
    """An API key (a backend's by default); the key itself is in ``.key``."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        return create_api_key(session=session, name=name, scope=scope)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Repeat each fault-injection test's counts at the end of the run."""
    from tests.faults import REPORTS

    if REPORTS:
        terminalreporter.section("fault injection: submitted / done / failed / lost / duplicated")
        for line in REPORTS:
            terminalreporter.write_line(line)
