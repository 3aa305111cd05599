"""Apply the database migrations (`flask --app wsgi db upgrade`) once, however many replicas start.

App containers sharing one PostgreSQL database start together (compose, a scaled deployment) and
would run the upgrade side by side, racing to create the same tables. A session-level advisory lock
makes them take turns: the first migrates, the others then find the schema current. SQLite is one
node's file and needs no lock. Called by docker/entrypoint.sh; exits with the upgrade's status.
"""

import subprocess
import sys

from sqlalchemy import create_engine, text

from webapp.config import config_from_env

# Any constant every replica agrees on; the value spells nothing.
MIGRATION_LOCK_KEY = 815_004_215
UPGRADE = ["flask", "--app", "wsgi", "db", "upgrade"]


def main() -> int:
    url = config_from_env().SQLALCHEMY_DATABASE_URI
    if not url.startswith("postgresql"):
        return subprocess.call(UPGRADE)
    engine = create_engine(url)
    with engine.connect() as connection:
        # Waits while another replica holds it; released when this connection closes, even if
        # the upgrade fails or is killed.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        return subprocess.call(UPGRADE)


if __name__ == "__main__":
    sys.exit(main())
