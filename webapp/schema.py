"""Whether the database's schema is as old as a revision this code has a migration after.

A backup restored from before an upgrade (docs/deployment.md, Backup and restore), or gunicorn
started on a database no one migrated, served a "ready" /readyz while every request failed on a
missing column with a 503 "try again in a minute". A database *newer* than the code (an old replica
during a rolling upgrade) is not flagged: the migrations add to the schema, and taking every old
replica out of the pool at once would stop screening.
"""

from __future__ import annotations

from functools import cache

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .config import PROJECT_DIR

UPGRADE_COMMAND = "flask --app wsgi db upgrade"


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision its migrations know (read once per process)."""
    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    script = ScriptDirectory.from_config(config)
    return script.get_current_head(), frozenset(rev.revision for rev in script.walk_revisions())


def schema_behind(session) -> str | None:
    """None when the schema is current (or newer than this code), else what to do about it."""
    try:
        current = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:  # no alembic_version table: never migrated (the caller saw the server answer)
        session.rollback()
        current = None
    head, known = _revisions()
    if current == head or (current is not None and current not in known):
        return None
    return f"database schema is at revision {current or '(none)'}, this version needs {head}: run `{UPGRADE_COMMAND}`"
