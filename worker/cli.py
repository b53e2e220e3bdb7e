"""The ``fashion`` command: run the worker, submit uploads, classify files, train.

Every command reads its configuration from ``FASHION_*`` environment variables
(see ``worker.config``); with none set it runs on the embedded defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from worker.config import get_settings


def _echo_json(payload: object) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Classify clothing photos and offer similar in-stock items.

    Uploads are stored in object storage, queued on Celery, classified by a
    Fashion-MNIST CNN and written to the product catalog. Configure with
    FASHION_* environment variables; with none set, everything runs locally
    (SQLite, a folder, a filesystem queue).
    """


@main.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for results.")
def demo(timeout: float) -> None:
    """Seed a sample catalog, start a worker, classify sample uploads, print results."""
    from worker.demo import run_demo

    sys.exit(run_demo(get_settings(), timeout=timeout))


@main.command()
def migrate() -> None:
    """Create or upgrade the catalog tables (Alembic) in FASHION_DATABASE_URL."""
    from catalog.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    click.echo("catalog schema is up to date")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q", "--queues", default=None, help="Comma-separated queues [default: interactive,bulk]."
)
@click.option(
    "-c", "--concurrency", type=int, default=None, help="Worker processes [default: cores]."
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str | None, concurrency: int | None, loglevel: str, celery_args: tuple) -> None:
    """Run a Celery worker; extra arguments go to `celery worker` unchanged.

    Production runs two kinds: `-Q interactive` (uploads; micro-batched, holds
    up to FASHION_BATCH_MAX_SIZE messages per process) and `-Q bulk`
    (catalog chunks; holds one message per process).
    """
    from worker.service.worker_app import make_worker_app

    settings = get_settings()
    app = make_worker_app(settings)
    queues = queues or f"{settings.interactive_queue},{settings.bulk_queue}"
    argv = ["worker", f"--loglevel={loglevel}", f"--queues={queues}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    argv.append(f"--prefetch-multiplier={settings.prefetch_multiplier(queues.split(','))}")
    app.worker_main([*argv, *celery_args])


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--wait/--no-wait", default=False, help="Wait for the results and print them.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def submit(files: tuple[str, ...], wait: bool, timeout: float, as_json: bool) -> None:
    """Upload FILES and queue them for classification (prints job ids)."""
    from worker import client

    settings = get_settings()
    job_ids = {}
    for name in files:
        path = Path(name)
        try:
            job_ids[client.submit(path.read_bytes(), path.name, settings=settings)] = name
        except client.SubmitError as exc:
            raise click.ClickException(str(exc)) from exc
    if not wait:
        for job_id, name in job_ids.items():
            _echo_json({"file": name, "job_id": job_id}) if as_json else click.echo(
                f"{job_id}  {name}"
            )
        return
    results = client.wait(job_ids, timeout=timeout, settings=settings)
    unfinished = 0
    for job_id, name in job_ids.items():
        job = results[job_id]
        unfinished += not (job and job.finished)
        if as_json:
            _echo_json({"file": name, **(job.as_dict() if job else {"job_id": job_id})})
        else:
            click.echo(f"{name}: {_describe(job)}")
    if unfinished:
        raise click.ClickException(f"{unfinished} job(s) did not finish within {timeout:.0f} s")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def result(job_id: str, as_json: bool) -> None:
    """Show the state of job JOB_ID and its similar in-stock items."""
    from worker import client

    job = client.result(job_id)
    if job is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    click.echo(json.dumps(job.as_dict()) if as_json else _describe(job))


def _describe(job: object) -> str:
    from catalog.codes import JobStatus

    if job is None:
        return "unknown job"
    if job.status == JobStatus.DONE:
        skus = ", ".join(item["sku"] for item in job.similar) or "none in stock"
        flag = ", uncertain" if job.uncertain else ""
        return f"{job.name} ({job.confidence:.1%}{flag}); similar: {skus}"
    if job.status == JobStatus.FAILED:
        return f"failed: {job.error['code']}: {job.error['message']}"
    return job.status


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def classify(files: tuple[str, ...], as_json: bool) -> None:
    """Classify FILES synchronously, without a broker or database.

    Prints one line per file: the label (0-9), its name and the confidence, or
    an error with a stable code. Exits 0 when every file got a line.
    """
    from worker.pipeline.classify import classify_files

    for line in classify_files([Path(name) for name in files], get_settings()):
        if as_json:
            _echo_json(line)
        elif "error" in line:
            click.echo(f"{line['file']}: error {line['error']['code']}: {line['error']['message']}")
        else:
            flag = ", uncertain" if line["uncertain"] else ""
            click.echo(f"{line['file']}: {line['name']} ({line['confidence']:.1%}{flag})")


@main.command()
@click.option(
    "--all",
    "mode",
    flag_value="all",
    help="Every product photo, even those the current model already did.",
)
@click.option(
    "--stale",
    "mode",
    flag_value="stale",
    default=True,
    help="Only photos not yet classified by the current model [default].",
)
@click.option(
    "--chunk",
    default=64,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Products per bulk task (one batched inference and one write each).",
)
@click.option("--wait", is_flag=True, help="Show a progress bar until the run is done.")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --wait: give up after this many seconds (the run carries on).",
)
def reclassify(mode: str, chunk: int, wait: bool, timeout: float | None) -> None:
    """Queue the catalog's product photos for (re-)classification on the bulk queue.

    Re-running resumes: products already classified by the current model
    version are skipped (with --all: those done since the interrupted --all run
    began). Progress: `fashion status` or --wait. Workers consuming the bulk
    queue do the work (`fashion worker -Q bulk`).
    """
    import kombu.exceptions

    from worker.service.reclassify import start_run

    settings = get_settings()
    try:
        run = start_run(mode, settings=settings, chunk_size=chunk)
    except kombu.exceptions.OperationalError as exc:
        raise click.ClickException(
            f"could not reach the broker ({exc}); run the command again to queue the rest"
        ) from exc
    chunks = -(-run.total // chunk)
    click.echo(
        f"run {run.id}: queued {run.total} products in {chunks} chunks "
        f"({mode}, model {run.model_version})"
    )
    if wait and run.total:
        _wait_for_run(run.id, settings, timeout)


def _wait_for_run(run_id: int, settings: object, timeout: float | None) -> None:
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from worker.service.reclassify import run_progress

    deadline = None if timeout is None else time.monotonic() + timeout
    state = run_progress(settings, run_id)
    columns = (
        TextColumn("[bold]reclassify"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f}/s, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=None, transient=False) as bar:
        task = bar.add_task("run", total=state.total, rate=0.0, failed=0)
        while True:
            state = run_progress(settings, run_id)
            bar.update(task, completed=state.done, rate=state.rate_per_s, failed=state.failed)
            if state.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(
                    f"run {run_id}: {state.done}/{state.total} done after {timeout:.0f} s; "
                    "it carries on in the workers (`fashion status`)"
                )
            time.sleep(0.5)
    click.echo(f"run {run_id}: {state.done} done, {state.failed} of them failed")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--ping-timeout", default=1.0, show_default=True, help="Seconds to wait for worker replies."
)
def status(as_json: bool, ping_timeout: float) -> None:
    """Queue depths, live workers, jobs by state, throughput and the latest bulk run."""
    import kombu.exceptions

    from worker.service.status import collect

    try:
        snapshot = collect(get_settings(), ping_timeout=ping_timeout)
    except kombu.exceptions.OperationalError as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from exc
    if as_json:
        _echo_json(snapshot)
        return
    queues = ", ".join(f"{name} {depth}" for name, depth in snapshot["queues"].items())
    click.echo(f"queues:   {queues} waiting")
    workers = snapshot["workers"]
    click.echo(f"workers:  {len(workers)}" + (f" ({', '.join(workers)})" if workers else ""))
    click.echo("jobs:     " + ", ".join(f"{k} {v}" for k, v in snapshot["jobs"].items()))
    click.echo(f"finished: {snapshot['throughput']['jobs_per_s']:.2f} jobs/s over the last minute")
    run = snapshot["reclassify"]
    if run:
        eta = (
            "finished"
            if run["finished"]
            else (
                f"ETA {run['eta_s']:.0f} s"
                if run["eta_s"] is not None
                else "ETA unknown (stalled?)"
            )
        )
        click.echo(
            f"bulk run {run['run_id']} ({run['mode']}, {run['trigger']}): "
            f"{run['done']}/{run['total']} done, {run['failed']} failed, "
            f"{run['rate_per_s']:.0f}/s, {eta}"
        )


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple) -> None:
    """Run Celery beat: the nightly re-classification and the new-model check.

    Run exactly one beat per deployment. FASHION_RECLASSIFY_CRON sets the
    nightly time (crontab, UTC; default "0 2 * * *"), FASHION_RECLASSIFY_NIGHTLY_MODE
    what it covers (all | stale); every FASHION_MODEL_CHECK_SECONDS a worker
    checks whether its model version has had a run yet and starts one if not.
    """
    from worker.service.worker_app import make_worker_app

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    make_worker_app(settings).start(["beat", f"--loglevel={loglevel}", *celery_args])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON result on stdout.")
@click.option(
    "--images",
    default=5000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Catalog size for the bulk runs.",
)
@click.option(
    "--naive-images",
    default=300,
    show_default=True,
    type=click.IntRange(min=10),
    help="Images through the naive baseline (it is slow).",
)
@click.option(
    "--interactive",
    default=200,
    show_default=True,
    type=click.IntRange(min=10),
    help="Uploads per latency measurement (idle, then during a bulk run).",
)
@click.option("--chunk", default=64, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes of the naive and of the bulk worker.",
)
@click.option(
    "--postgres-admin-url",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="Where a throw-away database is created (and dropped afterwards).",
)
@click.option("--redis-url", default="redis://127.0.0.1:6379/0", show_default=True)
@click.option(
    "--s3-endpoint",
    default=None,
    help="An S3-compatible server (credentials from FASHION_S3_*); default: start one.",
)
@click.option(
    "--s3rver",
    type=click.Path(exists=True, dir_okay=False),
    help="Start this s3rver executable (npm) as the S3 server instead of moto (faster).",
)
@click.option(
    "--out",
    default="bench/results.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Also write the JSON result here.",
)
def bench(
    as_json: bool,
    images: int,
    naive_images: int,
    interactive: int,
    chunk: int,
    concurrency: int,
    postgres_admin_url: str,
    redis_url: str,
    s3_endpoint: str | None,
    s3rver: str | None,
    out: str,
) -> None:
    """Measure throughput and latency end to end on real PostgreSQL, Redis and S3.

    Starts real workers against a throw-away database, bucket and queues, and
    measures the naive baseline (one task per image, Keras predict), bulk
    re-classification, interactive latency idle and during a bulk run,
    inference against the raw LiteRT engine, and worker RSS. Needs the train
    extra (TensorFlow, for the baseline) and, without --s3-endpoint, moto.
    Takes a few minutes with the defaults.
    """
    try:
        from worker.tools.benchmark import BenchConfig, run_benchmark
    except ImportError as exc:
        raise _training_import_error(exc) from exc

    config = BenchConfig(
        images=images,
        naive_images=min(naive_images, images // 2),
        interactive=interactive,
        chunk=chunk,
        concurrency=concurrency,
        postgres_admin_url=postgres_admin_url,
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        s3rver=s3rver,
    )
    try:
        results = run_benchmark(config, log=lambda line: click.echo(line, err=True))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(results, indent=None if as_json else 2)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    click.echo(text)


_model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A .tflite with model_card.json beside it [default: the model the worker uses].",
)
_mapping_option = click.option(
    "--mapping",
    "mapping_path",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON: photo class → Fashion-MNIST class indices, null (not in the catalog) "
    'or "skip" [default: the clothing-photos mapping].',
)


def _training_import_error(exc: ImportError) -> click.ClickException:
    return click.ClickException(
        f"this command needs the training extra: pip install '.[train]' ({exc})"
    )


@main.command()
@click.option("--arch", default="fashion-vgg", show_default=True, help="Architecture name.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epoch count.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--split-seed",
    type=int,
    help="Seed of the validation split (default: --seed); share it across ensemble members.",
)
@click.option(
    "--out", "out_dir", default="runs/latest", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--limit", type=click.IntRange(min=64), help="Train on this many images (smoke runs)."
)
def train(
    arch: str,
    epochs: int | None,
    seed: int,
    split_seed: int | None,
    out_dir: str,
    limit: int | None,
) -> None:
    """Train ARCH on Fashion-MNIST; write model.keras, model.tflite and model_card.json.

    Architectures: fashion-vgg (ours), small-cnn, and the earlier reports'
    seed-a, seed-b, seed-c, seed-d, each with its own recipe. The validation
    set comes from the 60 k training images and picks the best epoch and the
    softmax temperature; the 10 k test images are used once, for the model card.
    Logs every epoch to OUT/history.csv. Needs the [train] extra.
    """
    try:
        from training.data import DatasetNotFoundError
        from training.train import train as run_training
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    try:
        outcome = run_training(
            arch=arch,
            epochs=epochs,
            seed=seed,
            split_seed=split_seed,
            limit=limit,
            out_dir=Path(out_dir),
            data_dir=get_settings().mnist_dir,
        )
    except (DatasetNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(outcome.card, indent=2))


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def ensemble(runs: tuple[str, ...], out_dir: str) -> None:
    """Average the logits of several training RUNS (folders) into one exported model.

    Temperature and uncertainty threshold are fitted on the images that every
    run held out for validation; the test split is only reported.
    """
    try:
        from training.ensemble import build_ensemble
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    try:
        card = build_ensemble(
            [Path(run) for run in runs], out_dir=Path(out_dir), data_dir=get_settings().mnist_dir
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(card, indent=2))


@main.command()
@_model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--report", "report_dir", type=click.Path(file_okay=False), help="Write PNG plots here."
)
@click.option(
    "--photos",
    "photos_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Score real photos in DIR/<class>/<image> instead of the test split.",
)
@_mapping_option
@click.option(
    "--no-cutout",
    is_flag=True,
    help="With --photos: skip the foreground cut-out, to measure what it brings.",
)
def evaluate(
    model_path: str | None,
    as_json: bool,
    report_dir: str | None,
    photos_dir: str | None,
    mapping_path: str | None,
    no_cutout: bool,
) -> None:
    """Score a model on the Fashion-MNIST test split, as the worker runs it.

    Accuracy, per-class precision/recall/F1, confusion matrix and expected
    calibration error; with --report, PNGs of the confusion matrix, the
    reliability diagram and the most confident mistakes.

    With --photos DIR: real photos through the worker's own pipeline; accuracy
    on the classes the mapping scores (per class too), their confusion, the
    share of out-of-catalog photos flagged uncertain, and with --report a PNG
    grid of examples.
    """
    try:
        from training.data import DatasetNotFoundError
        from training.evaluate import evaluate as run_evaluation
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    from worker.pipeline.classifier import model_path as default_model_path

    settings = get_settings()
    if photos_dir is not None:
        _evaluate_photos(
            Path(model_path) if model_path else default_model_path(settings),
            Path(photos_dir),
            Path(mapping_path) if mapping_path else None,
            Path(report_dir) if report_dir else None,
            as_json,
            cutout=not no_cutout,
        )
        return
    try:
        result = run_evaluation(
            Path(model_path) if model_path else default_model_path(settings),
            data_dir=settings.mnist_dir,
            report_dir=Path(report_dir) if report_dir else None,
        )
    except DatasetNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"model {result['model_version']}: accuracy {result['accuracy']:.2%}, "
        f"ECE {result['ece']:.2%} on {result['images']} test images"
    )
    for name, scores in result["per_class"].items():
        click.echo(
            f"  {name:<12} precision {scores['precision']:.3f}  recall "
            f"{scores['recall']:.3f}  F1 {scores['f1']:.3f}"
        )
    for name, path in result.get("plots", {}).items():
        click.echo(f"  {name}: {path}")


def _evaluate_photos(
    model: Path,
    folder: Path,
    mapping_path: Path | None,
    report_dir: Path | None,
    as_json: bool,
    *,
    cutout: bool,
) -> None:
    from training.photos import PhotoFolderError, evaluate_photos, load_mapping
    from worker.pipeline.classifier import Classifier

    try:
        result = evaluate_photos(
            folder,
            Classifier(model),
            mapping=load_mapping(mapping_path),
            report_dir=report_dir,
            cutout=cutout,
        )
    except PhotoFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"model {result['model_version']}: accuracy {result['accuracy']:.1%} on "
        f"{result['scored_photos']} photos of mapped classes; uncertain: "
        f"{_percent(result['uncertain_out_of_catalog'])} of {result['out_of_catalog_photos']} "
        f"out-of-catalog photos, {_percent(result['uncertain_scored'])} of mapped ones"
    )
    for name, scores in result["per_class"].items():
        click.echo(
            f"  {name:<12} accuracy {scores['accuracy']:.1%}  uncertain "
            f"{scores['uncertain']:.1%}  ({scores['photos']} photos)"
        )
    for path, code in result["unreadable"].items():
        click.echo(f"  unreadable: {path}: {code}")
    for name, path in result.get("plots", {}).items():
        click.echo(f"  {name}: {path}")


@main.command("finetune-photos")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--photos",
    "photos_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Training photos in DIR/<class>/<image> (never the folder you report on).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--learning-rate", default=3e-4, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--photo-repeat",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Times each photo appears per epoch, beside the run's Fashion-MNIST images.",
)
@click.option(
    "--set-loss",
    "set_loss",
    type=click.Choice(["sum", "max"]),
    default="max",
    show_default=True,
    help="For a photo that may be any of several classes (shoes): -log of their summed "
    "probability (sum; the probability may spread over them) or of the largest one (max; "
    "the model commits to one, so its confidence is not split).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only N Fashion-MNIST images.")
def finetune_photos(
    run_dir: str,
    photos_dir: str,
    out_dir: str,
    epochs: int,
    learning_rate: float,
    photo_repeat: int,
    set_loss: str,
    limit: int | None,
) -> None:
    """Fine-tune a trained run (fashion train's --out) on real photos mixed with its
    Fashion-MNIST training images; writes a run folder for `fashion ensemble`."""
    try:
        from training.photo_finetune import finetune_on_photos
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    try:
        card = finetune_on_photos(
            Path(run_dir),
            Path(photos_dir),
            out_dir=Path(out_dir),
            epochs=epochs,
            learning_rate=learning_rate,
            photo_repeat=photo_repeat,
            loss=set_loss,
            limit=limit,
            data_dir=get_settings().mnist_dir,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{card['version']}: Fashion-MNIST validation {card['validation_accuracy']:.2%} "
        f"after {card['photo_finetune']['seconds']:.0f} s on "
        f"{card['photo_finetune']['photos']} photos; written to {out_dir}"
    )


@main.command("fit-photo-threshold")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@_model_option
@_mapping_option
@click.option(
    "--max-flagged",
    default=0.12,
    show_default=True,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Flag budget: the largest share of in-catalog photos to flag uncertain.",
)
@click.option(
    "--repeats",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Random half-splits for the estimate on photos the threshold was not fitted on.",
)
@click.option("--write", is_flag=True, help="Store the threshold in the model card.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit_photo_threshold(
    folder: str,
    model_path: str | None,
    mapping_path: str | None,
    max_flagged: float,
    repeats: int,
    write: bool,
    as_json: bool,
) -> None:
    """Fit the confidence threshold below which a photo on a busy background is
    flagged uncertain (FOLDER/<class>/<image>, mapped as for `fashion evaluate
    --photos`): the highest one flagging at most --max-flagged of the in-catalog
    photos. Prints what it flags on FOLDER and, by repeated half-splits, on photos
    it was not fitted on; --write stores it in the model card."""
    from worker.pipeline.classifier import model_path as default_model_path

    try:
        from training.photo_threshold import fit_photo_threshold as fit
        from training.photos import PhotoFolderError, load_mapping
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    try:
        result = fit(
            Path(folder),
            Path(model_path) if model_path else default_model_path(get_settings()),
            mapping=load_mapping(Path(mapping_path) if mapping_path else None),
            max_flagged=max_flagged,
            repeats=repeats,
            write=write,
        )
    except (PhotoFolderError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(result)
        return
    fit_figures, cross = result["fit"], result["fit"]["cross_fit"]
    previous = result["previous_photo_uncertain_threshold"]
    click.echo(
        f"model {result['model_version']}: photo threshold {result['photo_uncertain_threshold']} "
        f"(was {'not set' if previous is None else previous}; product-image threshold "
        f"{result['uncertain_threshold']})"
    )
    click.echo(
        f"  on {fit_figures['photos']} photos of {folder}: flags "
        f"{_percent(fit_figures['mapped_flagged'])} of {fit_figures['mapped_photos']} in-catalog, "
        f"{_percent(fit_figures['out_of_catalog_flagged'])} of "
        f"{fit_figures['out_of_catalog_photos']} out-of-catalog; answers kept "
        f"{_percent(fit_figures['accuracy_kept'])} right"
    )
    click.echo(
        f"  on unseen halves ({cross['repeats']} splits, median [p10, p90]): in-catalog flagged "
        f"{_spread(cross['mapped_flagged'])}, out-of-catalog flagged "
        f"{_spread(cross['out_of_catalog_flagged'])}"
    )
    click.echo(f"  written to {result['written']}" if write else "  not written (add --write)")


def _spread(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "n/a"
    return f"{_percent(figures['median'])} [{_percent(figures['p10'])}, {_percent(figures['p90'])}]"


@main.command("bench-photos")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N photos.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_photos(folder: str, rounds: int, limit: int | None, as_json: bool) -> None:
    """Latency of preprocessing + inference per photo on one core, with and without the
    foreground cut-out (FOLDER/<class>/<image>, e.g. the development photos)."""
    from worker.pipeline.classifier import get_classifier
    from worker.tools.photo_bench import run_photo_bench

    try:
        result = run_photo_bench(
            Path(folder), get_classifier(get_settings()), rounds=rounds, limit=limit
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"{result['photos']} photos (median {result['median_size'][0]}×"
        f"{result['median_size'][1]}) × {rounds}, one core, batch of one:"
    )
    for name in ("with_cutout", "without_cutout"):
        figures = result[name]
        click.echo(
            f"  {name.replace('_', ' '):<15} p50 {figures['p50']} ms  p95 {figures['p95']} ms  "
            f"{result['throughput_per_core'][name]} photos/s"
        )
    click.echo(f"  p95 ratio with/without: {result['p95_ratio']}×")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


@main.command()
@click.option(
    "--cv",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Cross-validation folds on the training split (0: none).",
)
@click.option("--only", multiple=True, help="Run only these baselines (repeatable).")
@click.option(
    "--cards",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CNN model_card.json files to list beside the classic rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def baselines(cv: int, only: tuple[str, ...], cards: tuple[str, ...], as_json: bool) -> None:
    """The classic-ML comparison: kNN, nearest mean, LDA, QDA (PCA), 3-layer MLP.

    Each is trained on the training split and scored on the test split, and by
    --cv-fold cross-validation on the training split. Prints a markdown table
    (with the CNN rows from --cards) or, with --json, one object.
    """
    try:
        from rich.console import Console

        from training.baselines import markdown_table, run_baselines
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    console = Console(stderr=True)
    with console.status("fitting baselines") as status:
        try:
            rows = run_baselines(
                cv=cv,
                only=list(only) or None,
                data_dir=get_settings().mnist_dir,
                on_progress=lambda name: status.update(f"fitting {name} (cv={cv})"),
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    cnn_cards = [json.loads(Path(card).read_text()) for card in cards]
    if as_json:
        _echo_json({"baselines": rows, "cnn": cnn_cards})
    else:
        click.echo(markdown_table(rows, cnn_cards))


@main.command(name="lr-find")
@click.option("--arch", default="fashion-vgg", show_default=True)
@click.option(
    "--png", default="runs/lr-find.png", show_default=True, type=click.Path(dir_okay=False)
)
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=10))
@click.option("--json", "as_json", is_flag=True)
def lr_find(arch: str, png: str, steps: int, as_json: bool) -> None:
    """Learning-rate range test: loss against an exponentially rising rate, as a PNG."""
    try:
        from training.lr_find import lr_find as run_lr_find
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    try:
        result = run_lr_find(
            arch=arch, png=Path(png), steps=steps, data_dir=get_settings().mnist_dir
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(result)
    else:
        click.echo(
            f"lowest loss at {result['min_loss_rate']:.1e}; suggested rate "
            f"{result['suggested_rate']:.1e} (recipe uses {result['recipe_rate']:.1e}); "
            f"plot: {result['png']}"
        )


@main.command()
@click.option("--max-trials", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--max-minutes", default=20.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--limit",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=64),
    help="Training images per trial.",
)
@click.option(
    "--out", "out_dir", default="runs/tune", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--json", "as_json", is_flag=True)
def tune(
    max_trials: int, max_minutes: float, epochs: int, limit: int, out_dir: str, as_json: bool
) -> None:
    """KerasTuner random search over report A's space (filters, kernel, learning rate).

    Scored on the validation split; stops after --max-trials or, between
    trials, once --max-minutes have passed.
    """
    try:
        from training.tune import tune as run_tune
    except ImportError as exc:
        raise _training_import_error(exc) from exc
    result = run_tune(
        out_dir=Path(out_dir),
        max_trials=max_trials,
        max_minutes=max_minutes,
        epochs=epochs,
        limit=limit,
        data_dir=get_settings().mnist_dir,
    )
    if as_json:
        _echo_json(result)
        return
    for trial in result["trials"]:
        click.echo(f"val_accuracy {trial['val_accuracy']}: {trial['hyperparameters']}")
    click.echo(f"stopped by {result['stopped_by']}")


@main.group()
def catalog() -> None:
    """The product catalog: import, export, audit, similar items, one product."""


@catalog.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--queue/--no-queue",
    default=True,
    show_default=True,
    help="Queue new or changed photos for classification on the bulk queue.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def catalog_import(file: str, queue: bool, as_json: bool) -> None:
    """Upsert products from a CSV or JSON-lines FILE (by sku).

    Columns: sku, name, category, price, stock_quantity, and image (a photo path
    relative to FILE) or image_key (an object already in storage). A bad row is
    reported with its row number and never stops the import; a missing photo is
    reported and the product is imported without one.
    """
    from rich.progress import Progress

    from catalog.db import upgrade
    from worker.catalog_import import import_catalog

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    path = Path(file)
    with Progress(transient=True, disable=as_json) as progress:
        bar = progress.add_task(f"importing {path.name}", total=None)
        try:
            report = import_catalog(
                path, settings=settings, queue=queue, on_row=lambda: progress.advance(bar)
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(report.as_dict())
        return
    click.echo(
        f"inserted {report.inserted}, updated {report.updated}, "
        f"rejected {len(report.rejected)}, missing photos {len(report.missing_photos)}, "
        f"queued for classification {report.queued}"
    )
    for problem in report.rejected:
        click.echo(f"  row {problem.row}: rejected: {problem.reason}")
    for problem in report.missing_photos:
        click.echo(f"  row {problem.row}: {problem.reason}")


@catalog.command(name="export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write [default: stdout].")
def catalog_export(fmt: str, out: str | None) -> None:
    """Write every product, with its predicted category and confidence."""
    import csv
    import io

    from catalog.db import get_sessionmaker
    from catalog.queries import all_products

    columns = [
        "sku",
        "name",
        "category",
        "price",
        "stock_quantity",
        "image_key",
        "predicted_category",
        "predicted_confidence",
        "model_version",
    ]
    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        rows = [
            {column: getattr(product, column) for column in columns}
            for product in all_products(session=session)
        ]
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        for row in rows:
            buffer.write(json.dumps(row, default=str) + "\n")
    if out:
        Path(out).write_text(buffer.getvalue())
    else:
        click.echo(buffer.getvalue(), nl=False)


@catalog.command(name="audit")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def catalog_audit(limit: int | None, as_json: bool) -> None:
    """Products whose photo the model puts in another category, most confident first."""
    from catalog.db import get_sessionmaker
    from catalog.queries import audit_mismatches

    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        products = audit_mismatches(session=session, limit=limit)
    for product in products:
        line = {
            "sku": product.sku,
            "name": product.name,
            "listed": product.category,
            "predicted": product.predicted_category,
            "confidence": round(product.predicted_confidence, 4),
            "model_version": product.model_version,
        }
        if as_json:
            _echo_json(line)
        else:
            click.echo(
                f"{line['sku']}: listed {line['listed']}, photo looks like "
                f"{line['predicted']} ({line['confidence']:.1%})"
            )
    if not products and not as_json:
        click.echo("no product's photo disagrees with its category")


@catalog.command(name="similar")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--png", type=click.Path(dir_okay=False), help="Draw the upload and its items here.")
def catalog_similar(job_id: str, as_json: bool, png: str | None) -> None:
    """The in-stock products recorded as similar to job JOB_ID's upload, best first."""
    from catalog.db import get_sessionmaker
    from catalog.queries import get_job, similar_for_job

    settings = get_settings()
    with get_sessionmaker(settings.resolved_database_url)() as session:
        similar = similar_for_job(session=session, job_id=job_id)
        job = get_job(session=session, job_id=job_id)
        keys = {}
        if similar:
            from catalog.queries import get_product

            keys = {
                item.sku: get_product(session=session, sku=item.sku).image_key for item in similar
            }
    if similar is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    if png:
        _draw_similar(settings, job, similar, keys, Path(png))
    if as_json:
        _echo_json(
            {
                "job_id": job_id,
                "status": job.status,
                "label": job.label_name,
                "similar": [
                    {
                        "rank": s.rank,
                        "sku": s.sku,
                        "name": s.name,
                        "category": s.category,
                        "price": str(s.price),
                        "stock_quantity": s.stock_quantity,
                        "score": s.score,
                    }
                    for s in similar
                ],
            }
        )
        return
    click.echo(f"job {job_id}: {job.status}, {job.label_name or '-'}")
    for item in similar:
        click.echo(
            f"  #{item.rank} {item.sku} {item.name} ({item.category}, "
            f"{item.price}, {item.stock_quantity} in stock) score {item.score:.3f}"
        )
    if png:
        click.echo(f"picture: {png}")


def _draw_similar(settings, job, similar, keys, path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from worker.errors import FashionError
    from worker.picture import draw_similar, fetch_photos
    from worker.pipeline.preprocess import preprocess
    from worker.storage import get_store

    store = get_store(settings)
    upload = store.get(job.image_key)
    try:
        model_input = Image.fromarray(
            preprocess(
                upload, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )
        )
    except FashionError:
        model_input = None
    draw_similar(
        upload=upload,
        model_input=model_input,
        label=job.label_name or job.status,
        similar=similar,
        photos=fetch_photos(store, keys),
        path=path,
    )


@catalog.command(name="show")
@click.argument("sku")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def catalog_show(sku: str, as_json: bool) -> None:
    """One product: listing, stock and what the model sees in its photo."""
    from catalog.db import get_sessionmaker
    from catalog.queries import get_product

    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        product = get_product(session=session, sku=sku)
    if product is None:
        raise click.ClickException(f"no product with sku {sku!r}")
    fields = {
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": str(product.price),
        "stock_quantity": product.stock_quantity,
        "image_key": product.image_key,
        "predicted_category": product.predicted_category,
        "predicted_confidence": product.predicted_confidence,
        "model_version": product.model_version,
        "classification_error": product.classification_error,
    }
    if as_json:
        _echo_json(fields)
    else:
        for key, value in fields.items():
            click.echo(f"{key:>21}: {value}")


if __name__ == "__main__":
    main()
