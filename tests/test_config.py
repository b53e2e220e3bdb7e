"""The settings as an operator meets them: every one documented in the README."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from worker.config import Settings

README = Path(__file__).parents[1] / "README.md"


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    """A setting nobody can find is a setting nobody sets: each one's variable has a
    row in the README's table (``| `FASHION_…` |``)."""
    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"FASHION_{name}"
        if not any(f"`{variable.upper()}`" in row for row in table):
            missing.append(variable.upper())
    assert missing == []
