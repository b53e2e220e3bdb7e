"""`fashion catalog …` on the embedded defaults, and bulk classification through real workers."""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from catalog.db import get_sessionmaker, upgrade
from catalog.models import Product, SimilarItem
from catalog.queries import upsert_product
from tests.support.factories import png_bytes
from tests.support.jobs import enqueue_by_hand, unclassified
from worker import client
from worker.cli import main
from worker.config import Settings, get_settings
from worker.service.products import classify_products
from worker.tools.images import png_bomb


@pytest.fixture()
def cli_settings(tmp_path: Path, monkeypatch) -> Settings:
    """Point the CLI's own settings (read from the environment) at a temporary folder."""
    for key in ("FASHION_DATABASE_URL", "FASHION_BROKER_URL", "FASHION_STORAGE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def first_of(fashion_mnist, label: int) -> np.ndarray:
    return fashion_mnist.test_images[int(np.flatnonzero(fashion_mnist.test_labels == label)[0])]


@pytest.fixture()
def catalog_file(tmp_path: Path, fashion_mnist) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "trouser.png").write_bytes(png_bytes(first_of(fashion_mnist, 1)))
    (photos / "bag.png").write_bytes(png_bytes(first_of(fashion_mnist, 8)))
    rows = [
        "sku,name,category,price,stock_quantity,image",
        "TRS-1,Blue jeans,Trouser,49.90,3,photos/trouser.png",  # row 1: fine
        "BAG-1,Tote,Dress,30,2,photos/bag.png",  # row 2: listed in the wrong category
        "HAT-1,Cap,Hat,10,1,",  # row 3: not one of our categories
        "TRS-2,Chinos,Trouser,-5,1,photos/trouser.png",  # row 4: negative price
        "TRS-3,Cords,Trouser,40,many,photos/trouser.png",  # row 5: stock not a number
        "TRS-4,Slacks,Trouser,39,1,photos/missing.png",  # row 6: photo missing, still imported
        "TRS-1,Blue jeans (new),Trouser,44.90,5,photos/trouser.png",  # row 7: updates row 1
    ]
    path = tmp_path / "catalog.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_import_reports_inserted_updated_rejected_and_missing_photos(
    cli_settings, catalog_file
) -> None:
    report = json.loads(
        invoke("catalog", "import", str(catalog_file), "--json", "--no-queue").stdout
    )
    assert (report["inserted"], report["updated"]) == (3, 1)
    assert [problem["row"] for problem in report["rejected"]] == [3, 4, 5]
    assert "Hat" in report["rejected"][0]["reason"]
    assert [problem["row"] for problem in report["missing_photos"]] == [6]
    shown = json.loads(invoke("catalog", "show", "TRS-1", "--json").stdout)
    assert (shown["name"], shown["price"], shown["stock_quantity"]) == (
        "Blue jeans (new)",
        "44.90",
        5,
    )


def test_import_of_json_lines_skips_a_broken_line(cli_settings, tmp_path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        '{"sku": "D-1", "name": "Dress", "category": "Dress", "price": 20, "stock_quantity": 1}\n'
        "{not json\n"
        '["a list"]\n'
    )
    report = json.loads(invoke("catalog", "import", str(path), "--json", "--no-queue").stdout)
    assert report["inserted"] == 1
    assert [problem["row"] for problem in report["rejected"]] == [2, 3]


def test_classified_catalog_is_audited_exported_and_shown(cli_settings, catalog_file) -> None:
    invoke("catalog", "import", str(catalog_file), "--no-queue")
    with get_sessionmaker(cli_settings.resolved_database_url)() as session:
        ids = list(session.scalars(select(Product.id)))
    result = classify_products(ids, settings=cli_settings)
    assert (result.classified, result.failed) == (2, 1)  # TRS-4 has no photo
    assert classify_products(ids, settings=cli_settings).skipped == 3  # resumable

    audit = [json.loads(line) for line in invoke("catalog", "audit", "--json").stdout.splitlines()]
    assert [(line["sku"], line["listed"], line["predicted"]) for line in audit] == [
        ("BAG-1", "Dress", "Bag")
    ]
    shown = json.loads(invoke("catalog", "show", "TRS-4", "--json").stdout)
    assert shown["classification_error"] == "no_photo"
    exported = invoke("catalog", "export", "--format", "jsonl").stdout.splitlines()
    assert {json.loads(line)["sku"] for line in exported} == {"TRS-1", "BAG-1", "TRS-4"}


def test_similar_command_prints_and_draws_the_offered_products(
    cli_settings, catalog_file, fashion_mnist, tmp_path, start_worker
) -> None:
    invoke("catalog", "import", str(catalog_file))  # queues the photos on the bulk queue
    worker = start_worker(cli_settings, queues="both")
    wait_until_classified(cli_settings)
    job_id = client.submit(
        png_bytes(fashion_mnist.test_images[2]), "trouser.png", settings=cli_settings
    )
    job = client.wait([job_id], timeout=90, settings=cli_settings)[job_id]
    assert worker.poll() is None and job.status == "done", job
    payload = json.loads(invoke("catalog", "similar", job_id, "--json").stdout)
    assert payload["label"] == "Trouser"
    assert [item["sku"] for item in payload["similar"]] == ["TRS-1"]
    png = tmp_path / "similar.png"
    invoke("catalog", "similar", job_id, "--png", str(png))
    assert Image.open(png).size[0] >= 3 * 160  # upload, model input, one product


def test_two_workers_write_results_concurrently_on_postgresql(
    service_settings, start_worker, fashion_mnist, tmp_path
) -> None:
    from worker.service.catalog_import import import_catalog

    photos = tmp_path / "photos"
    photos.mkdir()
    lines = ["sku,name,category,price,stock_quantity,image"]
    from catalog.models import CATEGORIES

    for index in range(40):
        label = int(fashion_mnist.train_labels[index])
        (photos / f"{index}.png").write_bytes(png_bytes(fashion_mnist.train_images[index]))
        lines.append(f"P-{index},Item {index},{CATEGORIES[label]},10,4,photos/{index}.png")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    report = import_catalog(tmp_path / "catalog.csv", settings=service_settings)
    assert report.queued == 40
    for _ in range(2):
        start_worker(service_settings, queues="both", concurrency=2)
    job_ids = [
        client.submit(png_bytes(image), f"{i}.png", settings=service_settings)
        for i, image in enumerate(fashion_mnist.test_images[:30])
    ]
    results = client.wait(job_ids, timeout=120, settings=service_settings)
    assert all(job.status == "done" for job in results.values())
    wait_until_classified(service_settings)
    with get_sessionmaker(service_settings.resolved_database_url)() as session:
        ranks = session.execute(select(SimilarItem.job_id, SimilarItem.rank)).all()
    assert len(ranks) == sum(len(job.similar) for job in results.values())
    by_job: dict = {}
    for job_id, rank in ranks:
        by_job.setdefault(str(job_id), []).append(rank)
    assert all(sorted(r) == list(range(1, len(r) + 1)) for r in by_job.values())


def wait_until_classified(settings: Settings, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = unclassified(settings)
        if pending == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{pending} product(s) still unclassified after {timeout} s")


def test_csv_export_quotes_cells_a_spreadsheet_would_run_as_formulas(cli_settings) -> None:
    upgrade(cli_settings.resolved_database_url)
    formula = '=HYPERLINK("http://attacker.example","click")'
    with get_sessionmaker(cli_settings.resolved_database_url).begin() as session:
        upsert_product(
            session=session,
            sku="@SUM(1)",
            name=formula,
            category="Bag",
            price=Decimal("9.90"),
            stock_quantity=1,
            image_key=None,
        )
    (row,) = csv.DictReader(io.StringIO(invoke("catalog", "export").stdout))
    assert (row["sku"], row["name"], row["price"]) == ("'@SUM(1)", "'" + formula, "9.90")
    (line,) = invoke("catalog", "export", "--format", "jsonl").stdout.splitlines()
    assert json.loads(line)["name"] == formula  # JSON is data, not a spreadsheet


def test_similar_png_draws_a_grey_tile_for_an_upload_that_is_a_bomb(cli_settings, tmp_path) -> None:
    upgrade(cli_settings.resolved_database_url)
    job_id = enqueue_by_hand(cli_settings, png_bomb())
    png = tmp_path / "similar.png"
    invoke("catalog", "similar", job_id, "--png", str(png))
    picture = Image.open(png).convert("RGB")
    assert picture.size[0] >= 160
    assert picture.getpixel((80, 80)) == (200, 200, 200)  # the bomb drawn as a grey tile
