"""The rules of the road (docs/architecture.md), as tests: who may import whom.

Read from the source with ``ast``, every ``import`` counted, those inside functions
too, so a lazy import cannot slip a forbidden dependency in. The light client is
also imported for real in a fresh interpreter, to see what it loads and writes.
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

#: (the modules a rule covers, the imports they must not make, why)
RULES = [
    ("catalog", ("worker", "training", "tests"), "the catalog knows nothing of the worker"),
    (
        "worker.pipeline",
        ("worker", "catalog", "training", "tests", "tensorflow", "keras", "celery", "sqlalchemy"),
        "the pipeline needs only settings, errors and the shared vocabulary",
    ),
    (
        "worker.service",
        ("training", "worker.cli", "worker.tools", "tests", "tensorflow", "keras"),
        "the service runs the exported model, never TensorFlow or training",
    ),
    (
        "worker.client",
        ("training", "worker.cli", "worker.tools", "worker.pipeline", "tests", "cv2"),
        "a web backend's import stays light",
    ),
    (
        "worker.api",
        ("training", "worker.cli", "worker.tools", "worker.pipeline", "tests", "cv2"),
        "the HTTP API stores and enqueues; it never loads the model or image code",
    ),
    ("worker", ("worker.tools", "tests"), "the product never imports the tools or the tests"),
    (
        "training",
        ("worker.service", "worker.cli", "worker.tools", "tests"),
        "training uses the pipeline",
    ),
]
#: Exceptions to a rule's prefixes: what the pipeline may import of ours.
ALLOWED = {
    "worker.pipeline": (
        "worker.pipeline",
        "worker.config",
        "worker.errors",
        "worker.files",
        "catalog.codes",
    ),
    "worker": ("worker.tools",),  # the tools themselves, and the CLI's bench commands
}
#: Modules the "worker" rule does not cover: the tools, and the CLI that runs them.
TOOL_USERS = ("worker.tools", "worker.cli.bench")


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


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(scope: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    files = [
        path
        for path in sorted(root.glob("**/*.py"))
        if ".venv" not in path.parts and _matches(module_name(path, root), (scope,))
    ]
    allowed = ALLOWED.get(scope, ())
    found = []
    for path in files:
        name = module_name(path, root)
        if scope == "worker" and _matches(name, TOOL_USERS):
            continue
        for imported in sorted(imports_of(path, root)):
            if _matches(imported, forbidden) and not _matches(imported, allowed):
                found.append(f"{name} imports {imported}")
    return found


@pytest.mark.parametrize(("scope", "forbidden", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_no_module_imports_what_its_role_forbids(scope, forbidden, why) -> None:
    assert violations(scope, forbidden) == [], why


def test_a_forbidden_import_is_caught(tmp_path) -> None:
    """The rules can fail: a service module that imports training is reported."""
    service = tmp_path / "worker" / "service"
    service.mkdir(parents=True)
    (service / "__init__.py").write_text("")
    (service / "sneaky.py").write_text("def f():\n    from training.train import train\n")
    found = violations(
        "worker.service", dict((r[0], r[1]) for r in RULES)["worker.service"], tmp_path
    )
    assert found == [
        "worker.service.sneaky imports training.train",
        "worker.service.sneaky imports training.train.train",
    ]


def test_no_service_module_is_longer_than_a_newcomer_reads_in_one_sitting() -> None:
    lengths = {
        module_name(path): len(path.read_text().splitlines())
        for path in sorted((ROOT / "worker" / "service").glob("*.py"))
    }
    assert {name: n for name, n in lengths.items() if n > 400} == {}


@pytest.mark.parametrize("module", ["worker.client", "worker.api.app"])
def test_the_client_and_the_api_load_no_image_code_and_write_nothing_at_import(
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
