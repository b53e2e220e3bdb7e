"""``fashion model …``: roll a new model version out, compare it, promote it, roll it back.

The steps of docs/rollout.md: ``stage`` a candidate (its catalog predictions fill
on the bulk queue while the live version keeps answering), ``list`` to compare,
``promote`` once its fill and indexes are complete, ``rollback`` at once if it
disappoints, ``retire`` what is no longer wanted.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click

from worker.cli.common import echo_json
from worker.config import ENGINES, Settings, get_settings


def _settings() -> Settings:
    from catalog.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return settings


def _operator() -> str:
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


def _refused(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def model() -> None:
    """Model versions: stage a candidate, compare, promote, roll back, retire.

    One version is live: it answers every upload, and its similar items are
    searched. A candidate fills its own predictions for the whole catalog (from
    the kept model inputs, on the bulk queue) beside the live one, which keeps
    answering; `promote` switches every worker over within
    FASHION_MODEL_REFRESH_SECONDS, and `rollback` switches back as fast.
    """


@model.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
def model_list(as_json: bool) -> None:
    """Every registered version: state, engine, catalog coverage, indexes, and for a
    candidate under evaluation how it compares on shadowed uploads."""
    from catalog.db import get_sessionmaker
    from catalog.public import model_versions
    from worker.service.registry import register_configured

    settings = _settings()
    register_configured(settings)  # on a new catalog, the configured model registers
    with get_sessionmaker(settings.resolved_database_url)() as session:
        reports = [shown.model_dump(mode="json") for shown in model_versions(session=session)]
    exact = settings.resolved_database_url.startswith("sqlite")
    for report in reports:
        if as_json:
            echo_json(report)
            continue
        for line in _describe(report, exact_search=exact):
            click.echo(line)


def _describe(report: dict[str, Any], *, exact_search: bool) -> list[str]:
    """A version in a few lines: what it is, then its shadow comparison and timings."""
    accuracy, promoted = report["test_accuracy"], report["promoted_at"]
    indexes = (
        "exact search" if exact_search else ("indexed" if report["indexed"] else "not indexed")
    )
    lines = [
        f"{report['version']}  {report['state']}  {report['engine']}",
        f"    catalog {report['predicted']}/{report['catalog_photos']} "
        f"({report['coverage']:.1%})"
        + (f", {report['failed']} failed" if report["failed"] else "")
        + f", {indexes}"
        + ("" if accuracy is None else f"; card: test accuracy {accuracy:.2%} (float)")
        + (
            ""
            if promoted is None
            else f"; {'live since' if report['state'] == 'live' else 'last promoted'} "
            f"{promoted[:16]} by {report['promoted_by']}"
        ),
    ]
    shadow = report["shadow"]
    if shadow is not None:
        lines.append(f"    shadowed uploads {_shadow(shadow)}")
    if report["engine_timings"]:
        lines.append(f"    engines where it was staged: {_engines(report['engine_timings'])}")
    return lines


def _engines(timings: dict[str, dict[str, Any]]) -> str:
    """``float 707/s, dynamic 646/s, int8 574/s (outside parity)``."""
    return ", ".join(
        f"{name} {timed['images_per_s']:.0f}/s" + ("" if timed["parity"] else " (outside parity)")
        for name, timed in timings.items()
    )


def _shadow(shadow: dict[str, Any]) -> str:
    """A candidate's comparison with the live answers, in one line."""
    if not shadow["compared"]:
        return "none yet"

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    return (
        f"{shadow['compared']}: labels differ {share(shadow['disagreement'])}; flagged "
        f"live {share(shadow['live_flag_rate'])} / this {share(shadow['candidate_flag_rate'])}; "
        f"reviewed {shadow['reviewed']}: live right {share(shadow['live_accuracy'])} / "
        f"this {share(shadow['candidate_accuracy'])}"
    )


@model.command(name="stage")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=None,
    help="Which artifact of the model runs [default: each is timed here, and the fastest "
    "within the card's parity bounds is staged].",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Show the fill's progress until it is done, then build its indexes.",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --wait: give up after this many seconds (the fill carries on).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_stage(
    path: Path, engine: str | None, wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Register the model at PATH (a .tflite with model_card.json beside it) as a
    candidate and fill its catalog predictions on the bulk queue.

    Uploads keep being answered by the live version meanwhile; the candidate's
    rows go into no search index until its fill is complete (beat's model check,
    or --wait, then builds them). `fashion model promote VERSION` once it is.
    """
    from catalog.versions import RegistryError
    from worker.cli.ops import wait_for_run
    from worker.pipeline.classifier import ModelError
    from worker.service.rollout import index_when_filled, stage

    settings = _settings()
    try:
        staged = stage(settings, path, engine=engine)
    except (ModelError, RegistryError) as exc:
        raise _refused(exc) from exc
    indexed = False
    if not as_json:
        if staged.engine_timings:
            click.echo(
                f"engines on this host: {_engines(staged.engine_timings)}; "
                f"fastest within parity: {staged.engine}"
            )
        click.echo(
            f"staged {staged.version} ({staged.engine}) as a candidate: run {staged.run_id} "
            f"queued {staged.queued} products on the bulk queue"
        )
    if wait:
        if staged.queued:
            wait_for_run(staged.run_id, settings, timeout)
        indexed = index_when_filled(settings, staged.version)
        if not as_json:
            click.echo(
                f"{staged.version}: filled and indexed, ready for "
                f"`fashion model promote {staged.version}`"
                if indexed
                else f"{staged.version}: fill incomplete, indexes not built"
            )
    if as_json:
        echo_json(
            {
                "version": staged.version,
                "engine": staged.engine,
                "run_id": staged.run_id,
                "queued": staged.queued,
                "indexed": indexed,
                "engine_timings": staged.engine_timings,
            }
        )


@model.command(name="index")
@click.argument("version")
def model_index(version: str) -> None:
    """Build VERSION's similar-item indexes now, if its fill is complete (beat's
    model check does this every FASHION_MODEL_CHECK_SECONDS)."""
    from worker.service.rollout import index_when_filled

    if not index_when_filled(_settings(), version):
        raise click.ClickException(
            f"{version}: not registered, retired, or its fill is not complete (fashion model list)"
        )
    click.echo(f"{version}: indexes built")


@model.command(name="promote")
@click.argument("version")
@click.option(
    "--force",
    is_flag=True,
    help="Promote although its fill or indexes are incomplete (uploads then get "
    "fewer similar items, or slower ones, until they are).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_promote(version: str, force: bool, as_json: bool) -> None:
    """Make VERSION live: every worker answers with it within
    FASHION_MODEL_REFRESH_SECONDS. Refused while its catalog fill or its indexes
    are incomplete (the reasons are printed)."""
    from catalog.versions import RegistryError
    from worker.service.rollout import promote

    settings = _settings()
    try:
        before = promote(settings, version, by=_operator(), force=force)
    except RegistryError as exc:
        raise _refused(exc) from exc
    if as_json:
        echo_json({"live": version, "previous": before or None})
    else:
        click.echo(f"{version} is live" + (f" (was {before})" if before else ""))


@model.command(name="rollback")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_rollback(as_json: bool) -> None:
    """Make the previously live version live again, at once: its predictions and
    indexes were kept."""
    from catalog.versions import RegistryError
    from worker.service.rollout import rollback

    try:
        version = rollback(_settings(), by=_operator())
    except RegistryError as exc:
        raise _refused(exc) from exc
    if as_json:
        echo_json({"live": version})
    else:
        click.echo(f"{version} is live again")


@model.command(name="retire")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_retire(version: str, as_json: bool) -> None:
    """Retire VERSION: its catalog predictions and indexes are deleted (stage it
    again to bring it back). The live version cannot be retired."""
    from catalog.versions import RegistryError
    from worker.service.rollout import retire

    try:
        deleted = retire(_settings(), version)
    except RegistryError as exc:
        raise _refused(exc) from exc
    if as_json:
        echo_json({"retired": version, "predictions_deleted": deleted})
    else:
        click.echo(f"{version} retired: {deleted} predictions and its indexes deleted")


COMMANDS = (model,)
