"""Shared fixtures: the real services and small factories.

Redis is the machine's own (``scripts/test`` starts it when it is down).
PostgreSQL is a server with pgvector that the test session starts for itself
(``tests.support.servers``: the machine's PostgreSQL has no pgvector, which the
catalog's similar-item search needs); each test gets a database of its own on it
(a copy of one migrated template), and queue names of its own on Redis, so nothing
collides with other users of those servers. The S3 server
is moto in server mode, a separate process bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy.orm import Session

from catalog.db import get_sessionmaker, upgrade
from tests.support.factories import S3_CREDENTIALS
from tests.support.servers import (
    ApiProcess,
    Databases,
    InProcessApi,
    moto_server,
    pgvector_server,
)
from training.data import FashionMnist, load_fashion_mnist
from worker.config import Settings, get_settings
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
from worker.service.celery_app import worker_command, worker_environment
from worker.storage import make_store

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def fashion_mnist() -> FashionMnist:
    return load_fashion_mnist()


_postgres = ExitStack()


@cache
def databases() -> Databases:
    """Databases on the session's PostgreSQL with pgvector, started on first use
    (stopped at exit)."""
    return Databases(_postgres.enter_context(pgvector_server()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    _postgres.close()


@pytest.fixture()
def empty_database() -> Iterator[str]:
    """A new database with no tables on the session's PostgreSQL (migration tests)."""
    url = databases().empty()
    yield url
    databases().drop(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis; each pytest-xdist process on a database of its own (1, 2, …),
    so a worker's broadcast (``celery inspect ping``, ``fashion status``) reaches only
    the workers of the test that sent it."""
    process = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … under -n
    database = int(process.removeprefix("gw")) + 1 if process.startswith("gw") else 0
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=database)
    client.ping()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{database}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible HTTP server in its own process, on 127.0.0.1 only."""
    with moto_server() as endpoint:
        yield endpoint


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
    database_url = databases().migrated()
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
    yield settings
    databases().drop(database_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both engines: a SQLite file and the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
        upgrade(url)
        return url
    # A database per test keeps the PostgreSQL runs as independent as SQLite's.
    url = databases().migrated()
    request.addfinalizer(lambda: databases().drop(url))
    return url


@pytest.fixture()
def postgresql_url() -> Iterator[str]:
    """A migrated database of its own on the session's PostgreSQL (with pgvector)."""
    url = databases().migrated()
    yield url
    databases().drop(url)


@pytest.fixture()
def session(database_url: str) -> Iterator[Session]:
    with get_sessionmaker(database_url).begin() as session:
        yield session


@pytest.fixture(scope="session")
def bundled_model() -> tuple[str, int]:
    """(version, embedding size) of the model the worker ships with."""
    classifier = Classifier(BUNDLED_MODEL)
    outputs = classifier.run(np.zeros((1, 28, 28, 1), dtype=np.float32))
    return classifier.version, outputs.embeddings.shape[1]


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
            env=worker_environment(settings),
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    # Killed, with their pool processes (each worker leads a session of its own): a
    # test that checks how a worker stops sends the signal itself, and at teardown
    # nothing is left to finish. Any stop, warm or cold, took ~2.2 s (the pool's bounded
    # exit wait, worker.service.tasks.POOL_EXIT_WAIT_S), in 34 tests.
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture()
def start_beat() -> Iterator:
    """Start a real `fashion beat` for ``settings``; stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(settings: Settings) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "beat", "--loglevel=INFO"],
            env=worker_environment(settings),
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


@pytest.fixture()
def open_api() -> Iterator:
    """Open the HTTP API for ``settings`` in process (``InProcessApi``): for the API's
    own behaviour, where no worker and no socket is needed. Closed after the test."""
    opened: list[InProcessApi] = []

    def open_one(settings: Settings) -> InProcessApi:
        opened.append(InProcessApi(settings))
        return opened[-1]

    yield open_one
    for api in opened:
        api.close()


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


#: Fixtures that start processes of ours: a test using one is in the ``processes`` lane
#: without having to say so.
PROCESS_FIXTURES = {"start_worker", "start_beat", "start_api"}


#: Lanes whose tests run one after another in one xdist worker (``--dist loadgroup``):
#: the fault tests, so no two break servers at once, and the TensorFlow tests, so no
#: two trainings share the two cores; measuring the shipped model (no training) is a
#: lane of its own beside them (~110 s off the training lane, the suite's longest).
SERIAL_LANES = ("faults", "training", "evaluation")


# tryfirst: pytest-xdist reads ``xdist_group`` in its own collection hook, which ran
# before this one, so the lanes did not form.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)
        for lane in SERIAL_LANES:
            if item.get_closest_marker(lane):
                item.add_marker(pytest.mark.xdist_group(lane))


#: The fault-injection counts, as the reports of the tests that made them arrived here
#: (from this process or, with ``-n``, from an xdist worker's).
_FAULT_COUNTS: list[str] = []
#: How many of this process's fault counts have left with a report already.
_SHIPPED = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A test's new fault counts travel with its report (xdist sends reports back)."""
    if call.when == "call":
        from tests.support.faults import REPORTS

        shipped = item.config.stash.setdefault(_SHIPPED, 0)
        item.user_properties.extend(("fault_counts", line) for line in REPORTS[shipped:])
        item.config.stash[_SHIPPED] = len(REPORTS)
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":  # the teardown's report carries the same properties
        counts = (value for key, value in report.user_properties if key == "fault_counts")
        _FAULT_COUNTS.extend(counts)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Repeat each fault-injection test's counts at the end of the run."""
    if _FAULT_COUNTS:
        terminalreporter.section("fault injection: submitted / done / failed / lost / duplicated")
        for line in _FAULT_COUNTS:
            terminalreporter.write_line(line)
