"""``fashion demo``, ``submit``, ``result``, ``classify``: uploads, through the service or not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from worker.cli.common import describe, echo_json
from worker.config import get_settings
from worker.errors import FashionError


@click.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for results.")
def demo(timeout: float) -> None:
    """Seed a sample catalog, start a worker, classify sample uploads, print results."""
    from worker.cli.demo import run_demo

    sys.exit(run_demo(get_settings(), timeout=timeout))


@click.command()
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
        except (client.SubmitError, FashionError) as exc:
            raise click.ClickException(str(exc)) from exc
    if not wait:
        for job_id, name in job_ids.items():
            echo_json({"file": name, "job_id": job_id}) if as_json else click.echo(
                f"{job_id}  {name}"
            )
        return
    results = client.wait(job_ids, timeout=timeout, settings=settings)
    unfinished = 0
    for job_id, name in job_ids.items():
        job = results[job_id]
        unfinished += not (job and job.finished)
        if as_json:
            shown = job.model_dump(mode="json") if job else {"job_id": job_id}
            echo_json({"file": name, **shown})
        else:
            click.echo(f"{name}: {describe(job)}")
    if unfinished:
        raise click.ClickException(f"{unfinished} job(s) did not finish within {timeout:.0f} s")


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def result(job_id: str, as_json: bool) -> None:
    """Show the state of job JOB_ID and its similar in-stock items."""
    from worker import client

    job = client.result(job_id)
    if job is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    click.echo(json.dumps(job.model_dump(mode="json")) if as_json else describe(job))


@click.command()
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
            echo_json(line)
        elif "error" in line:
            click.echo(f"{line['file']}: error {line['error']['code']}: {line['error']['message']}")
        else:
            flag = ", uncertain" if line["uncertain"] else ""
            click.echo(f"{line['file']}: {line['name']} ({line['confidence']:.1%}{flag})")


COMMANDS = (demo, submit, result, classify)
