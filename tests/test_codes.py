"""The shared vocabulary: one list of job states and error codes, and nothing beside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from catalog.codes import CATEGORIES, ErrorCode, JobStatus
from catalog.models import ClassificationJob

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("worker", "catalog", "training")
VOCABULARY = {code.value for code in ErrorCode} | {status.value for status in JobStatus}


def _readme_error_codes() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    return {
        code
        for row in table.splitlines()
        if row.startswith("| `")
        for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])
    }


def test_the_readme_error_table_lists_exactly_the_error_codes() -> None:
    assert _readme_error_codes() == {code.value for code in ErrorCode}


def test_the_errors_module_draws_every_error_code() -> None:
    import worker.errors

    drawn = set(re.findall(r"\b([a-z]+(?:_[a-z]+)*)\b", worker.errors.__doc__ or ""))
    assert {code.value for code in ErrorCode} <= drawn


def test_the_job_status_check_constraint_is_derived_from_the_enum() -> None:
    (check,) = [
        constraint
        for constraint in ClassificationJob.__table__.constraints
        if constraint.name == "ck_jobs_status"
    ]
    assert re.findall(r"'([a-z]+)'", str(check.sqltext)) == [status.value for status in JobStatus]


def test_categories_are_the_ten_fashion_mnist_classes() -> None:
    assert len(CATEGORIES) == 10 and len(set(CATEGORIES)) == 10


def _literals_outside_the_enums(path: Path) -> list[str]:
    """String constants spelling a state or a code, except docstrings, f-string text,
    dict keys and subscripts (``run["done"]`` is a count, not a state)."""
    tree = ast.parse(path.read_text())
    ignored: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            ignored.add(id(body[0].value))
        if isinstance(node, ast.JoinedStr):
            ignored.update(id(value) for value in node.values)
        if isinstance(node, ast.Dict):
            ignored.update(id(key) for key in node.keys if key is not None)
        if isinstance(node, ast.Subscript):
            ignored.add(id(node.slice))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in VOCABULARY and id(node) not in ignored
    ]


def test_no_state_or_error_code_is_spelled_outside_the_enums() -> None:
    found = [
        hit
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "codes.py" and "migrations" not in path.parts
        for hit in _literals_outside_the_enums(path)
    ]
    assert found == []
