"""Fit several training runs side by side on one GPU machine that has no TensorFlow.

Used for issue 20 on a lent H200 (Keras on JAX; `fashion finish RUN` then
calibrates, tests and exports each run on a machine with TensorFlow):

    KERAS_BACKEND=jax python3 scripts/train_on_device.py --data DIR --out OUT \\
        --budget 450 --split-seed 1 resnet20:1 resnet20:2 resnet32:1

With ``--photos PACK`` (``fashion pack-photos``, made on a machine that has the
photos) every run also trains on those photos from the first epoch, as
``fashion train --photos`` does.

Each RUN is ``ARCH:SEED``; every run fits for at most ``--budget`` seconds (its
cosine schedule stretched over the epochs that fit) and writes
``OUT/ARCH-sSEED/{model.keras,history.csv,fit.json,log.txt}``. A run that dies
stops the others at once, so a broken setup costs seconds, not the budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anneal_one(epochs: int, learning_rate: float, data: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from training.train import anneal

    print(anneal(out, epochs=epochs, learning_rate=learning_rate, data_dir=data).record)


def fit_one(
    arch: str,
    seed: int,
    split_seed: int,
    budget: float,
    data: Path,
    out: Path,
    photos: dict[str, object],
    limit: int | None = None,
) -> None:
    sys.path.insert(0, str(ROOT))
    from training.photo_data import targets_for_folder
    from training.train import fit

    if photos:
        photos = {**photos, "photo_targets": targets_for_folder(photos["photos"])}
    record = fit(
        arch=arch,
        seed=seed,
        split_seed=split_seed,
        out_dir=out,
        data_dir=data,
        verbose=2,
        time_budget_s=budget,
        limit=limit,
        **photos,
    )
    print(record.record, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="ARCH:SEED, e.g. resnet20:1")
    parser.add_argument("--data", type=Path, required=True, help="folder of the 4 IDX files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="seconds per run")
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("--photos", type=Path, help="a photo pack (fashion pack-photos)")
    parser.add_argument("--photo-repeat", type=int, default=2)
    parser.add_argument("--set-loss", default="max", choices=("sum", "max"))
    parser.add_argument("--limit", type=int, help="train on this many images (a dry run)")
    parser.add_argument(
        "--anneal",
        action="store_true",
        help="RUNs are ARCH:SEED:EPOCHS:LR: continue OUT/ARCH-sSEED with a cosine from LR",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one and args.anneal:
        _, _, epochs, rate = args.runs[0].split(":")
        anneal_one(int(epochs), float(rate), args.data, args.out)
        return 0
    if args.one:
        arch, seed = args.runs[0].split(":")
        photos = {}
        if args.photos:
            photos = {
                "photos": args.photos,
                "photo_repeat": args.photo_repeat,
                "photo_loss": args.set_loss,
            }
        fit_one(
            arch, int(seed), args.split_seed, args.budget, args.data, args.out, photos, args.limit
        )
        return 0

    children: dict[str, tuple[subprocess.Popen, Path]] = {}
    for run in args.runs:
        arch, seed = run.split(":")[:2]
        run_dir = args.out / f"{arch}-s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / ("anneal-log.txt" if args.anneal else "log.txt")
        command = [sys.executable, __file__, run, "--one", "--data", str(args.data)]
        command += ["--out", str(run_dir), "--budget", str(args.budget)]
        command += ["--split-seed", str(args.split_seed)] + (["--anneal"] * args.anneal)
        if args.photos:
            command += ["--photos", str(args.photos), "--photo-repeat", str(args.photo_repeat)]
            command += ["--set-loss", args.set_loss]
        if args.limit:
            command += ["--limit", str(args.limit)]
        env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
        with log.open("w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        children[run] = (process, log)
        print(f"started {run} (pid {process.pid})", flush=True)

    failed = False
    while children and not failed:
        time.sleep(5)
        for run, (process, log) in list(children.items()):
            code = process.poll()
            if code is None:
                continue
            del children[run]
            tail = log.read_text()[-3000:]
            print(f"--- {run} exited {code}\n{tail}", flush=True)
            failed = failed or code != 0
    for process, _ in children.values():
        process.kill()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
