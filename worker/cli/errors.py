"""What ``fashion`` says when its surroundings are not ready: one line naming the
problem and the fix, exit code 1, no traceback.

A malformed setting, a catalog without its schema, a database, broker or object
store that cannot be reached, and missing S3 credentials are the set-up mistakes a
newcomer meets first; each came out as a 40-line traceback. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import click

#: Words of a database error that mean "the tables are not there" (SQLite, PostgreSQL).
MISSING_TABLE = ("no such table", "does not exist", "UndefinedTable")


def explain(exc: BaseException) -> str | None:
    """One line for a set-up mistake; ``None`` for anything else. Library modules are
    imported only to check an exception that may come from them."""
    module = type(exc).__module__
    if module.startswith("pydantic"):
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{_variable(error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            return f"a setting is malformed: {problems} (see `fashion --help` and the README)"
    if module.startswith("sqlalchemy"):
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if any(words in str(exc) for words in MISSING_TABLE):
                return f"the catalog has no schema yet ({first}): run `fashion migrate`"
            if isinstance(exc, sqlalchemy.exc.OperationalError):
                return (
                    f"the database cannot be reached ({first}): check FASHION_DATABASE_URL "
                    "and that the server runs"
                )
    if module.startswith("kombu") or module.startswith("redis"):
        return (
            f"the broker cannot be reached ({type(exc).__name__}: {exc}): check "
            "FASHION_BROKER_URL and that the server runs"
        )
    if module.startswith("botocore"):
        import botocore.exceptions

        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return (
                "no S3 credentials: set FASHION_S3_ACCESS_KEY_ID and "
                "FASHION_S3_SECRET_ACCESS_KEY (or AWS's own variables)"
            )
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return f"the object store cannot be reached ({exc}): check FASHION_S3_ENDPOINT_URL"
    return None


def _variable(location: tuple) -> str:
    return "FASHION_" + "_".join(str(part) for part in location).upper()


class FashionGroup(click.Group):
    """``click.Group`` that turns a set-up mistake into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            line = explain(exc)
            if line is None:
                raise
            raise click.ClickException(line) from exc
