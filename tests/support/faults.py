"""Servers the fault-injection tests may break, and a ledger the database keeps.

Each fault test starts its own Redis and its own S3 server (moto) on free ports
of 127.0.0.1, so killing, restarting or hanging them never touches the
machine's shared servers or another test. PostgreSQL is the machine's server,
never restarted: a test only terminates the connections to its own database.

The ledger is a table filled by triggers: every time a job reaches ``done`` or
``failed``, and every time a product gets a classification (a model version's
row in ``product_predictions`` written or rewritten), a row is written in
the same transaction. Counting those rows tells "done exactly once" from the
database's side, independently of the code under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

from tests.support.servers import free_port, wait_for_port

LEDGER_SQL = """
CREATE TABLE fault_ledger (
    kind text NOT NULL,
    id text NOT NULL,
    outcome text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION fault_ledger_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('done', 'failed') AND NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO fault_ledger (kind, id, outcome)
        VALUES ('job', NEW.id::text, coalesce(NEW.error_code, NEW.status));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault_ledger_job AFTER UPDATE ON classification_jobs
    FOR EACH ROW EXECUTE FUNCTION fault_ledger_job();
CREATE FUNCTION fault_ledger_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.classified_at IS DISTINCT FROM OLD.classified_at THEN
        INSERT INTO fault_ledger (kind, id, outcome)
        VALUES ('product', NEW.product_id::text, coalesce(NEW.error, 'done'));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault_ledger_product AFTER INSERT OR UPDATE ON product_predictions
    FOR EACH ROW EXECUTE FUNCTION fault_ledger_product();
"""

#: One line per fault test, printed at the end of the pytest run (conftest).
REPORTS: list[str] = []


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def install_ledger(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute(LEDGER_SQL)


@dataclass(frozen=True)
class Tally:
    submitted: int
    done: int
    failed: int
    lost: int
    duplicated: int
    outcomes: dict[str, int]

    def line(self, name: str) -> str:
        return (
            f"{name}: submitted {self.submitted} / done {self.done} / failed {self.failed} / "
            f"lost {self.lost} / duplicated {self.duplicated}"
            + (f" (failures: {self.outcomes})" if self.failed else "")
        )


def tally(database_url: str, kind: str, ids: list[str]) -> Tally:
    """What the ledger saw for ``ids``: each should have exactly one row."""
    with psycopg.connect(libpq_url(database_url)) as connection:
        rows = connection.execute(
            "SELECT id, outcome FROM fault_ledger WHERE kind = %s ORDER BY at", (kind,)
        ).fetchall()
    wanted = set(ids)
    seen = Counter(row_id for row_id, _ in rows if row_id in wanted)
    last = {row_id: outcome for row_id, outcome in rows if row_id in wanted}
    outcomes = Counter(outcome for outcome in last.values() if outcome != "done")
    return Tally(
        submitted=len(wanted),
        done=sum(1 for outcome in last.values() if outcome == "done"),
        failed=sum(outcomes.values()),
        lost=len(wanted - set(seen)),
        duplicated=sum(1 for count in seen.values() if count > 1),
        outcomes=dict(outcomes),
    )


def report(name: str, result: Tally) -> None:
    line = result.line(name)
    print(line)
    REPORTS.append(line)


class RedisServer:
    """A redis-server of the test's own, persisting every write (``appendfsync always``)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(self.workdir),
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "maxmemory-policy": "noeviction",
            "logfile": str(self.workdir / "redis.log"),
        }
        arguments = [part for key, value in options.items() for part in (f"--{key}", value)]
        self.process = subprocess.Popen(["redis-server", *arguments])
        wait_for_port(self.port, process=self.process)
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis writes what it holds and exits, as on a restart by ops."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class S3Server:
    """moto's S3 server of the test's own; ``hang`` stops it answering (SIGSTOP)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hang(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(10)


def kill_hard(process: subprocess.Popen) -> list[int]:
    """SIGKILL a worker and its pool processes at once, as if its machine died."""
    pids = [process.pid, *_descendants(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)
    return pids


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def drop_connections(database_url: str) -> int:
    """Terminate every connection to this test's database but our own; returns how many."""
    name = make_url(database_url).database
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)
