"""docker-compose.yml is valid (`docker-compose config`, no engine) and splits the workers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def example_environment() -> dict[str, str]:
    """The variables .env.example sets, as an operator's .env would."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def run_config(environment: dict[str, str]) -> subprocess.CompletedProcess:
    keep = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return subprocess.run(
        ["docker-compose", "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        env=keep | environment,
        cwd=ROOT / "tests",  # no .env of the checkout is read
    )


def compose_config() -> dict:
    result = run_config(example_environment())
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
    for name, queue in (("worker-interactive", "interactive"), ("worker-bulk", "bulk")):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"fashion health --node celery@$$HOSTNAME -Q {queue}" in check, name
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


def test_compose_has_no_default_credentials_and_workers_do_not_use_the_root_account() -> None:
    environment = example_environment()
    for name in environment:
        missing = run_config({k: v for k, v in environment.items() if k != name})
        assert missing.returncode != 0, f"compose starts without {name}"
        assert name in missing.stderr
    services = compose_config()["services"]
    worker = services["worker-interactive"]["environment"]
    assert worker["FASHION_S3_ACCESS_KEY_ID"] != environment["MINIO_ROOT_USER"]
    assert environment["POSTGRES_PASSWORD"] in worker["FASHION_DATABASE_URL"]
    assert "fashion-rw" in " ".join(services["create-bucket"]["command"])


def test_flower_is_published_on_loopback_only_and_asks_for_a_password() -> None:
    flower = compose_config()["services"]["flower"]
    # docker-compose v1 prints "host_ip:published:target/proto"; v2 a mapping.
    hosts = [p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in flower["ports"]]
    assert hosts == ["127.0.0.1"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == example_environment()["FLOWER_BASIC_AUTH"]


def test_the_api_is_published_on_loopback_and_ready_only_when_its_servers_answer() -> None:
    services = compose_config()["services"]
    api = services["api"]
    assert api["command"][:2] == ["fashion", "api"]
    hosts = [p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in api["ports"]]
    assert hosts == ["127.0.0.1"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    webhooks = services["worker-webhooks"]
    assert webhooks["command"][2:4] == ["--queues", "webhooks"]
    assert "threads" in webhooks["command"]


def test_traces_go_to_a_viewer_published_on_loopback_only() -> None:
    services = compose_config()["services"]
    jaeger = services["jaeger"]
    hosts = [p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in jaeger["ports"]]
    assert hosts == ["127.0.0.1"]
    for name in ("api", "worker-interactive", "worker-bulk", "worker-webhooks", "beat"):
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://jaeger:4318", name
    turned_off = run_config({**example_environment(), "OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    off = yaml.safe_load(turned_off.stdout)["services"]["api"]["environment"]
    assert off["OTEL_EXPORTER_OTLP_ENDPOINT"] in ("", None)
