"""The shell commands' group: a database that cannot be used is one line, not a traceback.

`flask --app wsgi users list` on a PostgreSQL that is down, or on an instance folder without a
database yet, ended in a 150-line SQLAlchemy traceback whose one useful line was near the end.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup, ScriptInfo
from sqlalchemy import make_url
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from .refusal import database_reason
from .schema import UPGRADE_COMMAND


class AdminGroup(AppGroup):
    upgrade_hint = True  # a missing table means "not migrated yet", except in the migration commands

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OperationalError, InterfaceError, ProgrammingError) as exc:
            problem = database_problem(exc, self.upgrade_hint) + missing_folder(ctx)
            raise click.ClickException(problem) from None


def migration_commands(group: click.Group) -> AdminGroup:
    """Flask-Migrate's `db` group, its commands and options unchanged, with the same one-line error:
    `db upgrade` on a database that was down printed Flask-Migrate's 150-line traceback."""
    wrapped = AdminGroup(
        group.name, commands=group.commands, params=group.params, callback=group.callback, help=group.help
    )
    wrapped.upgrade_hint = False
    return wrapped


def missing_folder(ctx: click.Context) -> str:
    """SQLite's "unable to open database file" when the database's folder does not exist (an INSTANCE_DIR
    not made yet: scripts/run.sh makes it, `flask db upgrade` alone did not): which folder to create.
    The line named only DATABASE_URL, which such a site never set. A SQLite path holds no password."""
    url = make_url(ctx.ensure_object(ScriptInfo).load_app().config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "sqlite" or not url.database:
        return ""
    folder = Path(url.database).parent
    if folder.is_dir():
        return ""
    return f" The folder {folder} does not exist: create it (INSTANCE_DIR, unless DATABASE_URL names another file)."


def database_problem(exc: Exception, upgrade_hint: bool = True) -> str:
    reason = database_reason(exc)
    # A table or column missing (SQLite says "no such", PostgreSQL "does not exist"): a database never
    # migrated, or restored from a backup made before an upgrade.
    missing = "no such table" in reason or "no such column" in reason or "does not exist" in reason
    hint = f" Run `{UPGRADE_COMMAND}` first." if upgrade_hint and missing else ""
    return f"the database (DATABASE_URL) failed: {reason}.{hint}"
