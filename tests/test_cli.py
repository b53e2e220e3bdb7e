from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, update

from catalog.models import Product, ProductPrediction
from tests.support.factories import png_bytes
from worker.cli import main


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "worker", "submit", "classify", "result", "migrate", "train"):
        assert command in result.output


def test_classify_json_gives_the_right_label_for_a_test_image(
    tmp_path: Path, fashion_mnist
) -> None:
    index = 0
    image = tmp_path / "item.png"
    image.write_bytes(png_bytes(fashion_mnist.test_images[index]))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")

    result = CliRunner().invoke(main, ["classify", "--json", str(image), str(broken), str(empty)])

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["file"] == str(image)
    assert lines[0]["label"] == int(fashion_mnist.test_labels[index])
    assert lines[0]["name"] == "Ankle boot"
    assert 0 < lines[0]["confidence"] <= 1
    assert lines[1]["error"]["code"] in {"corrupt", "unsupported_format"}
    assert lines[2]["error"]["code"] == "empty"


def test_classify_reports_a_missing_file_and_still_exits_zero(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["classify", "--json", str(tmp_path / "nope.png")])
    assert result.exit_code == 0
    assert json.loads(result.output)["error"]["code"] == "unreadable"


DemoRun = tuple[Path, subprocess.CompletedProcess]  # its data dir, its process


def run_demo(data_dir: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASHION_")}
    env["FASHION_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.fixture(scope="module")
def first_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One demo run on a new data dir (two tests share it: a demo takes ~30 s)."""
    data_dir = tmp_path_factory.mktemp("demo")
    return data_dir, run_demo(data_dir)


@pytest.mark.processes
def test_demo_runs_end_to_end_on_embedded_defaults(
    first_demo: DemoRun,
) -> None:
    _, result = first_demo
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 10 uploads classified" in result.stdout
    assert "trouser.jpg" in result.stdout


@pytest.mark.processes
def test_demo_reclassifies_a_catalog_an_earlier_model_classified(
    first_demo: DemoRun,
) -> None:
    demo_data_dir, _ = first_demo
    engine = create_engine(f"sqlite:///{demo_data_dir / 'catalog.sqlite3'}")
    photographed = (
        select(ProductPrediction.model_version)
        .join(Product, Product.id == ProductPrediction.product_id)
        .where(Product.image_key.is_not(None))
    )
    with engine.begin() as connection:
        current = connection.execute(photographed).scalars().all()
        with_photo = connection.scalar(
            select(func.count()).select_from(Product).where(Product.image_key.is_not(None))
        )
        assert len(set(current)) == 1 and len(current) == with_photo  # all classified
        # The data dir outlives a model change: its products carry the old model's version.
        connection.execute(update(ProductPrediction).values(model_version="an-older-model"))
    result = run_demo(demo_data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 10 uploads classified" in result.stdout
    assert "not classified" not in result.stdout
    with engine.connect() as connection:
        redone = connection.execute(
            photographed.where(ProductPrediction.model_version == current[0])
        ).all()
    assert len(redone) == with_photo  # every photo classified by the live version again
    assert "none in stock" not in result.stdout


@pytest.mark.processes
def test_classify_refuses_a_fifo_and_an_endless_device_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "classify", "--json", str(fifo), "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=120,  # a hang or an endless read would end here, as a failure
        env={**os.environ, "FASHION_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 0, result.stderr
    codes = [json.loads(line)["error"]["code"] for line in result.stdout.splitlines()]
    assert codes == ["unreadable", "unreadable"]


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"FASHION_API_RATE_LIMIT": "plenty"}, "a setting is malformed: FASHION_API_RATE_LIMIT"),
        ({}, "the catalog has no schema yet (no such table: products): run `fashion migrate`"),
        (
            {"FASHION_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/catalog"},
            "the database cannot be reached",
        ),
    ],
    ids=["malformed-setting", "no-schema", "database-down"],
)
def test_a_set_up_mistake_is_one_line_naming_the_fix_not_a_traceback(
    environment: dict[str, str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.config import get_settings

    for key in [key for key in os.environ if key.startswith("FASHION_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "never-migrated"))
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["catalog", "show", "TEE-001"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.output.startswith("Error: " + says), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_fashion_api_says_in_one_line_what_it_cannot_use_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer who starts the API before `fashion migrate` is told, not left to
    read a 503 from /readyz. The server itself is not started here."""
    import uvicorn

    from worker.config import get_settings

    for key in [key for key in os.environ if key.startswith("FASHION_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "never-migrated"))
    served: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(kwargs))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["api", "--port", "8765"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert (
        "warning: the catalog has no schema yet (no such table: classification_jobs): "
        "run `fashion migrate`; /readyz answers 503 until then"
    ) in result.output
    assert served and served[0]["port"] == 8765
