"""The training commands' code paths, on small budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.cli import main

pytestmark = pytest.mark.training


def test_baselines_json_reports_test_and_cv_accuracy() -> None:
    result = CliRunner().invoke(
        main, ["baselines", "--only", "nearest-mean", "--only", "lda", "--cv", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["baselines"]}
    assert set(rows) == {"nearest-mean", "lda"}
    # Linear discriminants beat the nearest class mean on Fashion-MNIST.
    assert rows["lda"]["test_accuracy"] > rows["nearest-mean"]["test_accuracy"] > 0.5
    assert rows["lda"]["cv_folds"] == 2 and 0 < rows["lda"]["cv_std"] < 0.05


def test_baselines_refuses_an_unknown_name() -> None:
    result = CliRunner().invoke(main, ["baselines", "--only", "svm", "--cv", "0"])
    assert result.exit_code != 0
    assert "unknown baselines" in result.output


def test_lr_find_writes_a_plot(tmp_path: Path) -> None:
    png = tmp_path / "lr.png"
    result = CliRunner().invoke(
        main, ["lr-find", "--arch", "seed-d", "--steps", "30", "--png", str(png), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert 0 < payload["suggested_rate"] <= payload["min_loss_rate"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tune_is_bounded_by_trials(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "tune",
            "--max-trials",
            "2",
            "--epochs",
            "1",
            "--limit",
            "256",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["trials"]) == 2 and payload["stopped_by"] == "trials"
    assert set(payload["best"]["hyperparameters"]) == {"filters", "kernel_size", "learning_rate"}
    assert all(0 < trial["val_accuracy"] <= 1 for trial in payload["trials"])


def test_train_without_the_dataset_explains_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("training.data.DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr("training.data.KERAS_CACHE_DIR", tmp_path / "none")
    result = CliRunner().invoke(
        main,
        ["train", "--arch", "seed-d", "--out", str(tmp_path / "run")],
        env={"FASHION_MNIST_DIR": str(tmp_path / "none")},
    )
    assert result.exit_code == 1
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert "Traceback" not in result.output
