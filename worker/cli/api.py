"""``fashion api``, ``fashion api-key …``, ``fashion purge``: the HTTP door and its keys."""

from __future__ import annotations

import click

from catalog.codes import KeyScope
from worker.cli.common import echo_json
from worker.config import Settings, get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--workers", default=1, show_default=True, type=int, help="API processes (uvicorn workers)."
)
@click.option("--log-level", default="info", show_default=True)
def api(host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the HTTP API (FastAPI on uvicorn): uploads, results, webhooks.

    The OpenAPI schema at /openapi.json (docs at /docs with FASHION_API_DOCS=true),
    health at /livez and /readyz, Prometheus at /metrics. Callers authenticate with an API key
    (`fashion api-key create NAME`). Configured by FASHION_* variables, like the
    workers it feeds; with OTEL_EXPORTER_OTLP_ENDPOINT set, it exports traces.
    """
    import uvicorn

    from worker import tracing

    tracing.configure("fashion-api")  # before the check below opens the database
    warn_about_what_is_missing(get_settings())
    uvicorn.run(
        "worker.api.app:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # A client that sends nothing for this long is dropped: no slow-loris holds.
        timeout_keep_alive=5,
    )


def warn_about_what_is_missing(settings: Settings) -> None:
    """One line for each server the API cannot use yet, naming the fix; the API starts
    anyway (a database may come up after it) and /readyz answers 503 meanwhile."""
    from worker.api.observability import DEPENDENCIES
    from worker.cli.errors import explain

    for name, check in DEPENDENCIES:
        try:
            check(settings)
        except Exception as exc:  # noqa: BLE001 - reported, the server starts anyway
            why = explain(exc) or f"the {name} cannot be used ({type(exc).__name__}: {exc})"
            click.echo(f"warning: {why}; /readyz answers 503 until then", err=True)


@click.group(name="api-key")
def api_key() -> None:
    """API keys of the HTTP API's callers: create, list, revoke."""


@api_key.command(name="create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice([scope.value for scope in KeyScope]),
    default=KeyScope.BACKEND.value,
    show_default=True,
    help="backend: calls the /v1 API; reviewer: logs in to the review page (/review) "
    "as NAME. Neither can do the other's work.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def api_key_create(name: str, scope: str, as_json: bool) -> None:
    """Make a key named NAME and print it once (only its hash is kept), with the
    secret that signs this key's webhooks."""
    from catalog.api_keys import create_api_key
    from catalog.db import get_sessionmaker

    settings = get_settings()
    try:
        with get_sessionmaker(settings.resolved_database_url).begin() as session:
            made = create_api_key(session=session, name=name, scope=KeyScope(scope))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(
            {
                "name": made.name,
                "scope": scope,
                "key": made.key,
                "webhook_secret": made.webhook_secret,
            }
        )
        return
    click.echo(f"name:            {made.name} ({scope})")
    click.echo(f"key:             {made.key}")
    click.echo(f"webhook secret:  {made.webhook_secret}")
    click.echo("Store both now: the key is not shown again.")


@api_key.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def api_key_list(as_json: bool) -> None:
    """Every key: name, its first characters, when made, when revoked."""
    from catalog.api_keys import list_api_keys
    from catalog.db import get_sessionmaker

    settings = get_settings()
    with get_sessionmaker(settings.resolved_database_url)() as session:
        rows = [
            {
                "name": key.name,
                "prefix": key.key_prefix,
                "scope": key.scope,
                "created_at": key.created_at.isoformat(),
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in list_api_keys(session=session)
        ]
    for row in rows:
        if as_json:
            echo_json(row)
        else:
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "live"
            click.echo(
                f"{row['name']}  {row['scope']}  {row['prefix']}…  "
                f"made {row['created_at']}  {state}"
            )
    if not rows and not as_json:
        click.echo("no API keys (fashion api-key create NAME)")


@api_key.command(name="revoke")
@click.argument("name")
def api_key_revoke(name: str) -> None:
    """Revoke key NAME: refused from then on (within 5 s in running API processes)."""
    from catalog.api_keys import revoke_api_key
    from catalog.db import get_sessionmaker

    settings = get_settings()
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        if not revoke_api_key(session=session, name=name):
            raise click.ClickException(f"no live API key named {name!r}")
    click.echo(f"revoked {name}")


@click.command()
@click.option(
    "--older-than",
    type=float,
    default=None,
    help="Days; default FASHION_RETENTION_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be erased; erase nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def purge(older_than: float | None, dry_run: bool, as_json: bool) -> None:
    """Erase finished uploads (photo and result) older than the retention period.

    Beat does this daily (FASHION_PURGE_CRON); catalog product photos are never
    touched.
    """
    import datetime as dt

    from worker.service.retention import purge as run_purge

    settings = get_settings()
    if older_than is not None and older_than < 0:
        raise click.BadParameter("must be 0 or more days", param_hint="--older-than")
    report = run_purge(
        settings,
        older_than=None if older_than is None else dt.timedelta(days=older_than),
        dry_run=dry_run,
    )
    if as_json:
        echo_json(report.as_dict())
    else:
        verb = "would erase" if dry_run else "erased"
        click.echo(
            f"{verb} {report.jobs} upload(s) created before {report.cutoff:%Y-%m-%d %H:%M} UTC"
        )


COMMANDS = (api, api_key, purge)
