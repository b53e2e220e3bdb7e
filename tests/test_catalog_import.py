"""``fashion catalog import`` as an attacker or a careless operator would use it, on
SQLite and on the real PostgreSQL: only the catalog's own photos, only images,
every bad row reported alone, changed photos classified again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog.db import get_sessionmaker
from catalog.models import Product
from tests.support.factories import add_prediction, png_bytes
from tests.support.jobs import predictions
from worker.config import Settings
from worker.service.catalog_import import import_catalog

HEADER = "sku,name,category,price,stock_quantity,image,image_key"


@pytest.fixture()
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture()
def folder(tmp_path: Path, fashion_mnist) -> Path:
    catalog = tmp_path / "catalog"
    (catalog / "photos").mkdir(parents=True)
    (catalog / "photos" / "bag.png").write_bytes(png_bytes(fashion_mnist.test_images[0]))
    return catalog


def run_import(settings: Settings, folder: Path, *rows: str):  # type: ignore[no-untyped-def]
    path = folder / "catalog.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return import_catalog(path, settings=settings, queue=False)


def stored_objects(settings: Settings) -> list[bytes]:
    root = settings.data_dir / "objects"
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()] if root.exists() else []


def products(settings: Settings) -> dict[str, Product]:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return {p.sku: p for p in session.scalars(select(Product))}


def test_only_photos_inside_the_catalog_folder_are_read(settings, folder, tmp_path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((folder / "photos" / "bag.png").read_bytes())
    (folder / "photos" / "link.png").symlink_to(secret)
    report = run_import(
        settings,
        folder,
        "A1,Passwd,Bag,1,1,/etc/passwd,",
        "A2,Environ,Bag,1,1,/proc/self/environ,",
        "A3,Up,Bag,1,1,../secret.png,",
        "A4,Link,Bag,1,1,photos/link.png,",
        "A5,Fine,Bag,1,1,photos/bag.png,",
    )
    reasons = {problem.row: problem.reason for problem in report.missing_photos}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert all("outside the catalog's folder" in reason for reason in reasons.values())
    assert stored_objects(settings) == [(folder / "photos" / "bag.png").read_bytes()]


def test_a_photo_must_be_an_accepted_image_and_is_stored_as_what_it_is(settings, folder) -> None:
    (folder / "photos" / "page.html").write_text("<script>alert(1)</script>")
    os.rename(folder / "photos" / "bag.png", folder / "photos" / "bag.jpg")  # a PNG inside
    report = run_import(
        settings,
        folder,
        "A1,Page,Bag,1,1,photos/page.html,",
        "A2,Bag,Bag,1,1,photos/bag.jpg,",
    )
    assert [(p.row, p.reason) for p in report.missing_photos] == [
        (1, "photo 'photos/page.html' is not accepted: unsupported_format")
    ]
    key = products(settings)["A2"].image_key
    assert key.startswith("products/") and key.endswith(".png")


def test_an_image_key_cannot_point_at_a_customers_upload(settings, folder) -> None:
    report = run_import(settings, folder, "A1,Theirs,Bag,1,1,,uploads/0b3f")
    assert [p.reason for p in report.missing_photos] == ["image_key must start with 'products/'"]


def test_every_bad_row_is_reported_alone_and_the_rest_imported(settings, folder) -> None:
    path = folder / "catalog.csv"
    rows = [
        HEADER,
        "A1,Fine,Bag,1,1,photos/bag.png,",
        "A2," + "x" * 200_000 + ",Bag,1,1,,",
        "A3,Huge price,Bag,1e30,1,,",
        "A4,Huge stock,Bag,1,99999999999,,",
        "A5,N\x00UL,Bag,1,1,,",
    ]
    text = "\n".join(rows).encode() + b"\nA6,Caf\xe9,Bag,1,1,,\n"
    text += "".join(f"B{i},Fine,Bag,1,1,photos/bag.png,\n" for i in range(1200)).encode()
    path.write_bytes(b"\xef\xbb\xbf" + text)  # with a byte-order mark, as Excel writes

    report = import_catalog(path, settings=settings, queue=False)

    assert [problem.row for problem in report.rejected] == [2, 3, 4, 5, 6]
    assert "field larger than field limit" in report.rejected[0].reason
    assert "not UTF-8" in report.rejected[4].reason
    assert report.inserted == 1201
    assert len(products(settings)) == 1201


def test_a_changed_photo_gets_a_new_key_and_is_classified_again(
    settings, folder, fashion_mnist
) -> None:
    run_import(settings, folder, "A1,Bag,Bag,1,1,photos/bag.png,")
    first = products(settings)["A1"]
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        add_prediction(session, session.get(Product, first.id), model_version="m1", label=8)
    # Same SKU, same file name, new content.
    (folder / "photos" / "bag.png").write_bytes(png_bytes(fashion_mnist.test_images[1]))
    report = run_import(settings, folder, "A1,Bag,Bag,1,1,photos/bag.png,")

    second = products(settings)["A1"]
    assert report.updated == 1
    assert second.image_key != first.image_key
    assert second.id not in predictions(settings, "m1")  # waiting for the bulk queue again


def test_keys_of_different_products_never_collide(settings, folder) -> None:
    # The key used to be products/<sku><suffix>: SKU "x" with a .png photo and SKU
    # "x.png" pointing at products/x.png shared one object.
    report = run_import(
        settings,
        folder,
        "x,One,Bag,1,1,photos/bag.png,",
        "x.png,Two,Bag,1,1,,products/x.png",
    )
    found = products(settings)
    assert found["x"].image_key != "products/x.png"
    assert found["x.png"].image_key is None
    assert [p.reason for p in report.missing_photos] == [
        "image_key 'products/x.png' is not in storage"
    ]
