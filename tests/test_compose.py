"""docker-compose.yml is valid (`docker-compose config`, no engine) and splits the workers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_config() -> dict:
    result = subprocess.run(
        ["docker-compose", "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_runs_interactive_and_bulk_workers_apart() -> None:
    services = compose_config()["services"]
    assert {
        "redis",
        "postgres",
        "minio",
        "migrate",
        "worker-interactive",
        "worker-bulk",
        "beat",
    } <= set(services)
    assert services["worker-interactive"]["command"][-4:] == [
        "--queues",
        "interactive",
        "--concurrency",
        "2",
    ]
    assert services["worker-bulk"]["command"][-4:] == ["--queues", "bulk", "--concurrency", "2"]
    assert services["beat"]["command"] == ["fashion", "beat"]
    for name in ("worker-interactive", "worker-bulk"):
        assert "inspect ping" in " ".join(services[name]["healthcheck"]["test"]), name
    assert "noeviction" in services["redis"]["command"]
