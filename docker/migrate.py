"""Apply the database migrations (`flask --app wsgi db upgrade`) once, however many replicas start.

App containers sharing one PostgreSQL database start together (compose, a scaled deployment) and
would run the upgrade side by side, racing to create the same tables. An advisory lock, held by a
transaction open for the whole upgrade, makes them take turns: the first migrates, the others then find
the schema current. SQLite's file
is shared the same way by the web app, the job worker and the DICOM node on one node (podman-compose
starts all three at once: podman 4.3 has no `service_healthy`), so an exclusive lock on a file beside
the database does the same there. Called by docker/entrypoint.sh; exits with the upgrade's status.
"""

import fcntl
import subprocess
import sys

from sqlalchemy import create_engine, make_url, text

from webapp.config import config_from_env

# Any constant every replica agrees on; the value spells nothing.
MIGRATION_LOCK_KEY = 815_004_215
UPGRADE = ["flask", "--app", "wsgi", "db", "upgrade"]


def main() -> int:
    url = config_from_env().SQLALCHEMY_DATABASE_URI
    if url.startswith("sqlite"):
        database = make_url(url).database
        if not database or database == ":memory:":
            return subprocess.call(UPGRADE)
        # Three processes upgrading one file at once failed two of three runs here ("table
        # audit_events already exists"). The lock goes with the process, however it ends.
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return subprocess.call(UPGRADE)
    if not url.startswith("postgresql"):
        return subprocess.call(UPGRADE)
    engine = create_engine(url)
    # Everything below is one transaction, rolled back when the block ends (the SETs with it), and nothing
    # may outlive it: behind pgbouncer in transaction pooling the server connection then goes back to the
    # pool, to other clients. Until 5 December a session-level lock stayed on that pooled connection after
    # the upgrade, and the other replicas waited for it for ever.
    with engine.connect() as connection:
        # A DBA's timeouts (postgresql.conf, ALTER ROLE ... SET) are for the app's sessions, not this
        # one, which waits for another replica's upgrade and then sits idle in its transaction through
        # its own: statement_timeout or lock_timeout cancelled the wait, and idle_in_transaction_session_timeout
        # ended the session mid-upgrade, releasing the lock to the next replica, and the start failed with a
        # traceback after an upgrade that had worked.
        for setting in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
            connection.execute(text(f"SET {setting} = 0"))
        # Waits while another replica holds it; released when this transaction ends, or its connection
        # closes, even if the upgrade fails or is killed.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        return subprocess.call(UPGRADE)


if __name__ == "__main__":
    sys.exit(main())
