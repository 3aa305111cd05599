"""The shell commands' group: a database that cannot be used is one line, not a traceback.

`flask --app wsgi users list` on a PostgreSQL that is down, or on an instance folder without a
database yet, ended in a 150-line SQLAlchemy traceback whose one useful line was near the end.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from .refusal import database_reason


class AdminGroup(AppGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OperationalError, InterfaceError, ProgrammingError) as exc:
            raise click.ClickException(database_problem(exc)) from None


def database_problem(exc: Exception) -> str:
    reason = database_reason(exc)
    hint = (
        " Run `flask --app wsgi db upgrade` first." if "no such table" in reason or "does not exist" in reason else ""
    )
    return f"the database (DATABASE_URL) failed: {reason}.{hint}"
