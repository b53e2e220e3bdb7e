"""The rules of the road (docs/architecture.md), as tests: who may import whom.

Each folder states what of ours it *may* import (an allow-list, the table of
docs/architecture.md): a new upward import fails here without anyone having
thought to forbid it. Imports are read from the source with ``ast``, every
``import`` counted, those inside functions too, so a lazy import cannot slip a
dependency in. Third-party packages a role must never load are listed apart. The
light entry points are also imported for real in a fresh interpreter, to see what
they load and write.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("catalog", "worker", "training", "tests")

_BASICS = ("worker.config", "worker.errors", "worker.files", "worker.tracing")
_PRODUCT = (
    "catalog",
    "worker.api",
    "worker.callbacks",
    "worker.cli",
    "worker.client",
    "worker.pipeline",
    "worker.review_export",
    "worker.service",
    "worker.storage",
    *_BASICS,
)
#: For each folder or module (the longest matching name wins): what of ours it may
#: import, besides itself. Every module of ours must match a row.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "catalog.codes": (),
    "catalog": ("catalog",),
    "worker": (),  # the package's own __init__
    "worker.config": (),
    "worker.errors": ("catalog.codes",),
    "worker.files": (),
    # OpenTelemetry's set-up: imports OpenTelemetry only when traces are on.
    "worker.tracing": (),
    "worker.storage": ("worker.config", "worker.errors", "worker.files"),
    "worker.callbacks": (),
    "worker.pipeline": ("catalog.codes", *_BASICS),
    "worker.service": (
        "catalog",
        "worker.pipeline",
        "worker.storage",
        "worker.callbacks",
        *_BASICS,
    ),
    "worker.client": ("catalog", "worker.storage", "worker.service.messages", *_BASICS),
    # The reviews export reads a photo the way the worker did (the CLI runs it).
    "worker.review_export": ("catalog", "worker.storage", "worker.pipeline", *_BASICS),
    "worker.api": (
        "catalog",
        "worker.client",
        "worker.storage",
        "worker.callbacks",
        "worker.service.celery_app",
        "worker.service.messages",
        "worker.service.retention",
        *_BASICS,
    ),
    "worker.cli": ("training", *_PRODUCT),
    # The one command group that runs the tools (benchmarks).
    "worker.cli.bench": ("training", "worker.tools", *_PRODUCT),
    "worker.tools": ("training", "worker.tools", *_PRODUCT),
    "training": ("catalog.codes", "worker.pipeline", *_BASICS),
    "tests": ("catalog", "training", "worker", "tests.support"),
}
#: Rows whose modules may not import each other: a test module shares helpers only
#: through tests/support.
ISOLATED = {"tests"}
#: Third-party packages a role must never import, and why.
NEVER: dict[str, tuple[tuple[str, ...], str]] = {
    "worker.pipeline": (
        ("tensorflow", "keras", "celery", "sqlalchemy"),
        "the pipeline needs only settings, errors and the shared vocabulary",
    ),
    "worker.service": (
        ("tensorflow", "keras"),
        "the service runs the exported model, never TensorFlow",
    ),
    "worker.client": (("cv2", "tensorflow", "keras"), "a web backend's import stays light"),
    "worker.api": (
        ("cv2", "tensorflow", "keras", "ai_edge_litert"),
        "the HTTP API stores and enqueues; it never loads the model or image code",
    ),
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports resolved)."""
    found = set()
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _matches(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _row(name: str, table: dict) -> str | None:
    """The longest key of ``table`` that ``name`` falls under."""
    keys = [key for key in table if _matches(name, (key,))]
    return max(keys, key=len) if keys else None


def our_modules(root: Path = ROOT) -> list[Path]:
    return [
        path
        for path in sorted(root.glob("**/*.py"))
        if ".venv" not in path.parts and path.relative_to(root).parts[0] in OURS
    ]


def violations(root: Path = ROOT, table: dict[str, tuple[str, ...]] = MAY_IMPORT) -> list[str]:
    """Each import of ours that the importing module's row does not allow."""
    found = []
    for path in our_modules(root):
        name = module_name(path, root)
        row = _row(name, table)
        if row is None:
            found.append(f"{name} is in no row of the table")
            continue
        allowed = table[row] if row in ISOLATED else (row, *table[row])
        for imported in sorted(imports_of(path, root)):
            if imported.split(".")[0] not in OURS:
                continue
            # ``from worker import client`` also names the package ``worker``: the
            # module it names is checked; a package's own (empty) __init__ is not.
            if (root / imported.replace(".", "/")).is_dir():
                continue
            if not _matches(imported, allowed):
                found.append(f"{name} imports {imported}")
    return found


def forbidden_packages(root: Path = ROOT) -> list[str]:
    found = []
    for path in our_modules(root):
        name = module_name(path, root)
        row = _row(name, NEVER)
        if row is None:
            continue
        never, _why = NEVER[row]
        found += [
            f"{name} imports {imported} ({NEVER[row][1]})"
            for imported in sorted(imports_of(path, root))
            if _matches(imported, never)
        ]
    return found


def test_every_import_of_ours_is_one_its_folder_may_make() -> None:
    assert violations() == []


def test_no_role_imports_a_package_it_must_never_load() -> None:
    assert forbidden_packages() == []


def test_an_upward_import_is_caught_without_a_rule_against_it(tmp_path) -> None:
    """The allow-list can fail: a service module that imports the client (an arrow
    upward no rule names) and a test module that imports another are reported."""
    for folder in ("worker/service", "tests"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "service" / "sneaky.py").write_text(
        "def f():\n    from worker.client import submit\n"
    )
    (tmp_path / "tests" / "test_a.py").write_text("from tests.test_b import helper\n")
    assert violations(tmp_path) == [
        "tests.test_a imports tests.test_b",
        "tests.test_a imports tests.test_b.helper",
        "worker.service.sneaky imports worker.client",
        "worker.service.sneaky imports worker.client.submit",
    ]


def test_no_service_module_is_longer_than_a_newcomer_reads_in_one_sitting() -> None:
    lengths = {
        module_name(path): len(path.read_text().splitlines())
        for path in sorted((ROOT / "worker" / "service").glob("*.py"))
    }
    assert {name: n for name, n in lengths.items() if n > 400} == {}


@pytest.mark.parametrize("module", ["worker.client", "worker.api.app", "worker.cli"])
def test_the_client_the_api_and_the_cli_load_no_image_code_and_write_nothing_at_import(
    tmp_path, module
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("FASHION_")
    }
    environment |= {"HOME": str(home), "FASHION_DATA_DIR": str(tmp_path / "data")}
    output = subprocess.run(
        [sys.executable, "-c", probe],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = set(json.loads(output))
    heavy = ("cv2", "ai_edge_litert", "tensorflow", "keras", "celery.worker", "celery_batches")
    assert sorted(name for name in loaded if _matches(name, heavy)) == []
    assert module in loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert list(home.iterdir()) == []
