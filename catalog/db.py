"""Engines, sessions and migrations.

Engines hold connection pools, which do not survive ``fork``: ``get_engine`` keys
its cache by process id, so a Celery child process builds its own on first use.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # WAL lets the CLI read while a worker writes; the busy timeout makes
        # concurrent writers wait instead of failing with "database is locked".
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


#: Every PostgreSQL connection starts with the similar-item search's settings
#: (``catalog.similar``: the HNSW candidate list, iterative scans), sent with the
#: connection's start-up, so a lookup with them costs no ``set_config`` round trip.
SEARCH_EF_SEARCH = 100
SEARCH_SESSION_OPTIONS = (
    f"-c hnsw.ef_search={SEARCH_EF_SEARCH} -c hnsw.iterative_scan=relaxed_order"
)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(url)
        _configure_sqlite(engine)
        return engine
    # Looked up on the module at each call: OpenTelemetry's SQLAlchemy instrumentation
    # (worker.tracing, when traces are on) wraps sqlalchemy.create_engine.
    # Options the URL itself gives (``?options=…``) come first; ours are added.
    options = " ".join(filter(None, [parsed.query.get("options"), SEARCH_SESSION_OPTIONS]))
    return sqlalchemy.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"options": options},
    )


@cache
def _engine_for(url: str, pid: int) -> Engine:
    return make_engine(url)


def get_engine(url: str) -> Engine:
    """The engine for ``url`` in this process (a new one after fork)."""
    return _engine_for(url, os.getpid())


def get_sessionmaker(url: str) -> sessionmaker:
    return _sessionmaker_for(url, os.getpid())


@cache
def _sessionmaker_for(url: str, pid: int) -> sessionmaker:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    # Alembic is imported here, not at the top: it costs ~0.3 s, and the web
    # backend's client, which only reads and writes rows, never migrates.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
