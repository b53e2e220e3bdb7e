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
        "flower",
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
    assert "--appendonly" in services["redis"]["command"]  # queued messages survive a restart


def test_every_long_running_service_has_a_health_check_and_workers_export_metrics() -> None:
    services = compose_config()["services"]
    one_shots = {"migrate", "create-bucket"}
    for name, service in services.items():
        if name not in one_shots:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in one_shots:
        assert service_gates_on(services, name), f"nothing waits for {name} to finish"
    for name in ("worker-interactive", "worker-bulk"):
        environment = services[name]["environment"]
        assert environment["FASHION_METRICS_PORT"] == "9808"
        assert environment["FASHION_METRICS_BIND"] == "0.0.0.0"
    assert "flower" in services["flower"]["command"]
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])


def service_gates_on(services: dict, one_shot: str) -> bool:
    return any(
        service.get("depends_on", {}).get(one_shot, {}).get("condition")
        == "service_completed_successfully"
        for service in services.values()
    )
