"""Read product rows from CSV or JSON lines, validating each row on its own.

A bad row becomes a ``RejectedRow`` with its row number and reason; it never
stops the rows after it: a malformed line, an oversized field, bytes that are
not UTF-8, a NUL, a number the database cannot hold are each that row's problem
alone. A UTF-8 byte-order mark is accepted. Photos are not touched here (the catalog package knows
nothing of object storage): ``worker.service.catalog_import`` stores them and queues
them for classification.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from catalog.codes import CATEGORIES

REQUIRED = ("sku", "name", "category", "price", "stock_quantity")
#: What the columns hold: price is NUMERIC(10, 2), stock an INTEGER.
MAX_PRICE = Decimal("99999999.99")
MAX_STOCK = 2**31 - 1
#: Longest field accepted (the csv module's own limit is 128 KiB).
MAX_FIELD = 4096


@dataclass(frozen=True)
class ProductRow:
    row: int
    sku: str
    name: str
    category: str
    price: Decimal
    stock_quantity: int
    image: str | None
    image_key: str | None


@dataclass(frozen=True)
class RejectedRow:
    row: int
    reason: str


def _records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(row number, record or None, parse error or None); row 1 is the first data row."""
    # Undecodable bytes become lone surrogates, which ``validate`` rejects with the
    # row's number, instead of a UnicodeDecodeError that ends the whole import.
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, None, f"invalid JSON: {exc.msg}"
                    continue
                if not isinstance(record, dict):
                    yield number, None, "a JSON line must be an object"
                    continue
                yield number, record, None
        return
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        number = 0
        while True:
            number += 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, None, f"unreadable CSV row: {exc}"
                continue
            yield number, record, None


def validate(number: int, record: dict) -> ProductRow | RejectedRow:
    def text(key: str) -> str:
        value = record.get(key)
        return "" if value is None else str(value).strip()

    for key, value in record.items():
        value = "" if value is None else str(value)
        if len(value) > MAX_FIELD:
            return RejectedRow(number, f"{key!r} is longer than {MAX_FIELD} characters")
        if "\x00" in value:
            return RejectedRow(number, f"{key!r} contains a NUL character")
        if not _is_utf8(value):
            return RejectedRow(number, f"{key!r} has bytes that are not UTF-8")
    missing = [key for key in REQUIRED if not text(key)]
    if missing:
        return RejectedRow(number, f"missing {', '.join(missing)}")
    if len(text("sku")) > 64:
        return RejectedRow(number, "sku is longer than 64 characters")
    if text("category") not in CATEGORIES:
        return RejectedRow(number, f"unknown category {text('category')!r}")
    try:
        price = Decimal(text("price"))
    except InvalidOperation:
        return RejectedRow(number, f"price {text('price')!r} is not a number")
    if not price.is_finite() or not 0 <= price <= MAX_PRICE:
        return RejectedRow(number, f"price {text('price')!r} must be between 0 and {MAX_PRICE}")
    try:
        stock = int(text("stock_quantity"))
    except ValueError:
        return RejectedRow(number, f"stock_quantity {text('stock_quantity')!r} is not an integer")
    if not 0 <= stock <= MAX_STOCK:
        return RejectedRow(number, f"stock_quantity must be between 0 and {MAX_STOCK}")
    return ProductRow(
        row=number,
        sku=text("sku"),
        name=text("name")[:200],
        category=text("category"),
        price=price.quantize(Decimal("0.01")),
        stock_quantity=stock,
        image=text("image") or None,
        image_key=text("image_key") or None,
    )


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_products(path: Path) -> Iterator[ProductRow | RejectedRow]:
    """Every row of ``path`` as a valid ``ProductRow`` or a ``RejectedRow`` with a reason."""
    for number, record, error in _records(path):
        yield RejectedRow(number, error) if record is None else validate(number, record)
