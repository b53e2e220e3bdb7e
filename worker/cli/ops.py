"""``fashion migrate``, ``worker``, ``beat``, ``status``, ``reclassify``: running and
watching the service."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

import click

from worker.cli.common import echo_json
from worker.config import Settings, get_settings

#: prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


@click.command()
def migrate() -> None:
    """Create or upgrade the catalog tables (Alembic) in FASHION_DATABASE_URL."""
    from catalog.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    click.echo("catalog schema is up to date")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q",
    "--queues",
    default=None,
    help="Comma-separated queues [default: interactive,bulk,webhooks].",
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
    (catalog chunks; holds one message per process). Webhooks always get a pool
    of their own (FASHION_WEBHOOK_CONCURRENCY threads): with the other queues, in
    a second worker process this command starts and stops with itself, so a slow
    callback server never holds a process that classifies uploads.
    """
    from worker.service.worker_app import make_worker_app

    settings = get_settings()
    app = make_worker_app(settings)
    default = (settings.interactive_queue, settings.bulk_queue, settings.webhook_queue)
    names = queues.split(",") if queues else list(default)
    webhooks = settings.webhook_queue
    others = [name for name in names if name != webhooks]
    argv = ["worker", f"--loglevel={loglevel}"]
    if not others:  # -Q webhooks: this process is the webhook pool
        threads = concurrency or settings.webhook_concurrency
        argv += [f"--queues={webhooks}", "--pool=threads", f"--concurrency={threads}"]
        app.worker_main([*argv, *celery_args])
        return
    argv.append(f"--queues={','.join(others)}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    argv.append(f"--prefetch-multiplier={settings.prefetch_multiplier(others)}")
    webhook_worker = _start_webhook_worker(settings, loglevel) if webhooks in names else None
    try:
        app.worker_main([*argv, *celery_args])
    finally:
        if webhook_worker is not None:
            _stop(webhook_worker)


def _start_webhook_worker(settings: Settings, loglevel: str) -> subprocess.Popen:
    from worker.service.celery_app import worker_command, worker_environment

    # Deliveries wait on the network: threads, not processes, and none loads the model.
    command = worker_command(
        settings,
        [settings.webhook_queue],
        hostname=f"webhooks-{os.getpid()}",
        concurrency=settings.webhook_concurrency,
        loglevel=loglevel,
        extra=("--pool=threads",),
    )
    return subprocess.Popen(command, env=worker_environment(settings), preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec (the parent is single-threaded here): SIGTERM when the
    parent dies, even by SIGKILL, so no webhook worker outlives its ``fashion worker``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@click.command()
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
    "--changed",
    "mode",
    flag_value="changed",
    help=(
        "What the nightly run does: new photos, photos whose version tag in the bucket "
        "changed (one listing, no download), and products of another model (from their "
        "kept inputs)."
    ),
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

    from worker.service.reclassify import describe_reasons, start_run

    settings = get_settings()
    try:
        run = start_run(mode, settings=settings, chunk_size=chunk)
    except kombu.exceptions.OperationalError as exc:
        raise click.ClickException(
            f"could not reach the broker ({exc}); run the command again to queue the rest"
        ) from exc
    chunks = -(-run.total // chunk)
    why = f"; {describe_reasons(run.reasons)}" if run.reasons else ""
    click.echo(
        f"run {run.id}: queued {run.total} products in {chunks} chunks "
        f"({mode}, model {run.model_version}{why})"
    )
    if wait and run.total:
        wait_for_run(run.id, settings, timeout)
    if wait:
        from worker.service.rollout import index_when_filled

        if index_when_filled(settings, run.model_version):
            click.echo(f"{run.model_version}: its catalog is filled and its indexes are built")


def wait_for_run(run_id: int, settings: object, timeout: float | None) -> None:
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--ping-timeout", default=1.0, show_default=True, help="Seconds to wait for worker replies."
)
def status(as_json: bool, ping_timeout: float) -> None:
    """Queue depths, live workers, jobs by state, throughput, the latest bulk run
    (with why its products were queued, for a nightly ``changed`` run) and the live
    and candidate model versions."""
    import kombu.exceptions

    from worker.service.reclassify import describe_reasons
    from worker.service.status import collect

    try:
        snapshot = collect(get_settings(), ping_timeout=ping_timeout)
    except kombu.exceptions.OperationalError as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from exc
    if as_json:
        echo_json(snapshot)
        return
    queues = ", ".join(f"{name} {depth}" for name, depth in snapshot["queues"].items())
    click.echo(f"queues:   {queues} waiting")
    workers = snapshot["workers"]
    click.echo(f"workers:  {len(workers)}" + (f" ({', '.join(workers)})" if workers else ""))
    click.echo("jobs:     " + ", ".join(f"{k} {v}" for k, v in snapshot["jobs"].items()))
    click.echo(f"finished: {snapshot['throughput']['jobs_per_s']:.2f} jobs/s over the last minute")
    models = snapshot["models"]
    click.echo(
        f"models:   live {models['live'] or 'none yet'}"
        + (f"; candidates {', '.join(models['candidates'])}" if models["candidates"] else "")
    )
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
        if run["reasons"]:
            click.echo(f"  why: {describe_reasons(run['reasons'])}")


@click.command()
@click.option("--node", required=True, help="The worker's name, e.g. celery@$HOSTNAME.")
@click.option(
    "-Q", "--queues", default=None, help="Queues it consumes [default: interactive,bulk]."
)
@click.option(
    "--stale-after",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Unhealthy when messages wait and the worker took none for this many seconds.",
)
@click.option("--ping-timeout", default=5.0, show_default=True, help="Seconds to wait for a pong.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def health(
    node: str, queues: str | None, stale_after: float, ping_timeout: float, as_json: bool
) -> None:
    """Exit 0 if worker NODE answers and is consuming, 1 if not (for health checks).

    A ping alone is not enough: a worker can answer pings and take no message.
    NODE is unhealthy when messages wait on its queues and it has taken none for
    --stale-after seconds; an idle worker with empty queues is healthy.
    """
    import kombu.exceptions

    from worker.service.health import check

    settings = get_settings()
    names = (queues or f"{settings.interactive_queue},{settings.bulk_queue}").split(",")
    try:
        report = check(settings, node, names, stale_after=stale_after, ping_timeout=ping_timeout)
    except kombu.exceptions.OperationalError as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from exc
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(f"{node}: " + ("healthy" if report.healthy else "; ".join(report.problems)))
    sys.exit(0 if report.healthy else 1)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple) -> None:
    """Run Celery beat: the nightly re-classification and the new-model check.

    Run exactly one beat per deployment. FASHION_RECLASSIFY_CRON sets the
    nightly time (crontab, UTC; default "0 2 * * *"), FASHION_RECLASSIFY_NIGHTLY_MODE
    what it covers (changed [default] | stale | all); every FASHION_MODEL_CHECK_SECONDS a worker
    checks whether its model version has had a run yet and starts one if not.
    """
    from worker.service.worker_app import make_worker_app

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    make_worker_app(settings).start(["beat", f"--loglevel={loglevel}", *celery_args])


COMMANDS = (migrate, worker, beat, status, health, reclassify)
