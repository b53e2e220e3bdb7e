"""Turn model cards and a baselines run into the comparison table of docs/model.md.

Run: ``python -m training.report runs/*/model_card.json --baselines runs/baselines.json``.
Seeds of the same architecture are summarised as mean ± standard deviation.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

REPORTED = {
    "seed-a": "89.97 %",
    "seed-b": "~90 % (validation)",
    "seed-c": "91.68 %",
    "seed-d": "91.8 %",
}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values):.2%}"


def cnn_rows(cards: list[dict]) -> list[str]:
    by_arch: dict[str, list[dict]] = defaultdict(list)
    for card in cards:
        by_arch[card["architecture"]].append(card)
    lines = [
        "| system | params | epochs | train time (min) | seeds | validation acc. | test acc. "
        "| test ECE | reported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        by_arch, key=lambda arch: statistics.mean(c["test_accuracy"] for c in by_arch[arch])
    )
    for arch in order:
        runs = by_arch[arch]
        minutes = statistics.mean(card["training_seconds"] for card in runs) / 60
        lines.append(
            f"| {arch} | {runs[0]['params']:,} | {runs[0]['epochs']} | {minutes:.0f} "
            f"| {', '.join(str(card['seed']) for card in runs)} "
            f"| {_mean_std([card['validation_accuracy'] for card in runs])} "
            f"| {_mean_std([card['test_accuracy'] for card in runs])} "
            f"| {_mean_std([card['test_ece'] for card in runs])} "
            f"| {REPORTED.get(arch, 'ours' if arch.startswith('fashion-vgg') else '–')} |"
        )
    return lines


def baseline_rows(rows: list[dict]) -> list[str]:
    lines = [
        "| classic model | test acc. | cross-validation (train split) | seconds |",
        "|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda row: row["test_accuracy"]):
        cv = (
            f"{row['cv_mean']:.2%} ± {row['cv_std']:.2%} ({row['cv_folds']}-fold)"
            if "cv_mean" in row
            else "–"
        )
        lines.append(
            f"| {row['description']} | {row['test_accuracy']:.2%} | {cv} "
            f"| {row['fit_and_test_seconds']} |"
        )
    return lines


def plot_curves(card_paths: list[Path], png: Path) -> Path:
    """Validation accuracy per epoch of each run (history.csv beside its card)."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for path in card_paths:
        history = path.with_name("history.csv")
        if not history.is_file():
            continue
        with history.open() as handle:
            rows = list(csv.DictReader(handle))
        card = json.loads(path.read_text())
        axes.plot(
            [int(row["epoch"]) + 1 for row in rows],
            [float(row["val_accuracy"]) for row in rows],
            label=f"{card['architecture']} seed {card['seed']}",
        )
    axes.set_ylim(0.8, 0.96)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cards", nargs="+", type=Path)
    parser.add_argument("--baselines", type=Path)
    parser.add_argument("--curves", type=Path, help="also plot validation curves to this PNG")
    arguments = parser.parse_args()
    if arguments.curves:
        plot_curves(arguments.cards, arguments.curves)
    cards = [json.loads(path.read_text()) for path in arguments.cards]
    print("\n".join(cnn_rows(cards)))
    if arguments.baselines:
        print()
        print("\n".join(baseline_rows(json.loads(arguments.baselines.read_text())["baselines"])))


if __name__ == "__main__":
    main()
