"""Back up or restore the app's SQLite database safely while the app runs.

    python docker/backup_sqlite.py backup /app/instance/backup-2026-11-22.sqlite
    python docker/backup_sqlite.py restore /tmp/backup-2026-11-22.sqlite

Copying the .sqlite file while a worker writes can capture a torn, unusable file; SQLite's
online backup API copies a consistent snapshot instead (and restores the same way, under
SQLite's own locks). The database is the one the app uses (DATABASE_URL / INSTANCE_DIR).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import make_url  # noqa: E402

from webapp.env import exit_on_config_error  # noqa: E402
from webapp.private_files import private_sqlite_file  # noqa: E402
from webapp.schema import UPGRADE_COMMAND  # noqa: E402

with exit_on_config_error("backup_sqlite"):
    from webapp.config import config_from_env


# The files SQLite may leave beside a database whose writing was cut short.
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


def live_database() -> Path:
    with exit_on_config_error("backup_sqlite"):  # APP_ENV is read here, not at the import
        url = make_url(config_from_env().SQLALCHEMY_DATABASE_URI)
    if url.get_backend_name() != "sqlite" or not url.database:
        sys.exit(
            "DATABASE_URL is not a SQLite file; for PostgreSQL use pg_dump / pg_restore"
            " (docs/deployment.md, Backup and restore)."
        )
    return Path(url.database)


def schema_revision(path: Path) -> str:
    """The migration revision of the app database at `path`, read without writing; exits when the
    file is not a sound SQLite database of this app (the job queue's jobs.sqlite sits beside it)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            problems = db.execute("PRAGMA integrity_check").fetchone()[0]
            has_version = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone() if has_version else None
    except sqlite3.DatabaseError as exc:
        sys.exit(f"{path} is not a readable SQLite database: {exc}")
    if problems != "ok":
        sys.exit(f"integrity check of {path} failed: {problems}")
    if revision is None:
        sys.exit(f"{path} is not a database of this app (it has no schema revision)")
    return revision[0]


def copy(source: Path, target: Path, standalone: bool = False) -> None:
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
            if standalone:
                # The copy of the app's WAL-mode database was in WAL mode too: checked read-only, it
                # then kept -shm and -wal files beside it, which the `rm` of the backup left behind.
                dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        sys.exit(f"copying {source} to {target} failed: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Online backup/restore of the app's SQLite database.")
    parser.add_argument("action", choices=("backup", "restore"))
    parser.add_argument("file", type=Path, help="backup file to write (backup) or read (restore)")
    args = parser.parse_args()
    live = live_database()
    if args.action == "backup":
        if args.file.exists():
            sys.exit(f"{args.file} exists; choose a new name so no backup is overwritten")
        if not args.file.parent.is_dir():
            sys.exit(f"no folder {args.file.parent} to write the backup in")
        if not live.is_file():
            sys.exit(f"no database at {live} to back up (check INSTANCE_DIR / DATABASE_URL)")
        # A backup holds every patient's data: mode 0600 like the live file, not the umask's 0644.
        private_sqlite_file(str(args.file))
        try:
            copy(live, args.file, standalone=True)
            revision = schema_revision(args.file)
        except SystemExit:
            # A disk that fills mid-copy left an empty or torn file that looked like a backup, and the
            # retry was refused because the name was taken.
            for path in (args.file, *(args.file.with_name(args.file.name + end) for end in SQLITE_SIDE_FILES)):
                path.unlink(missing_ok=True)
            raise
        print(f"backed up {live} to {args.file} (schema revision {revision})")
    else:
        if not args.file.is_file():
            sys.exit(f"no backup file {args.file}")
        # Checked before anything is written: a wrong or damaged file must leave the live database as it was.
        revision = schema_revision(args.file)
        # On a new server there is no live file yet: SQLite would create it with the umask's mode.
        private_sqlite_file(str(live))
        copy(args.file, live)
        # gunicorn alone does not migrate: a backup from before an upgrade needs `db upgrade` first
        # (the container's entrypoint runs it at every start), else /readyz names the old revision.
        print(
            f"restored {live} from {args.file} (schema revision {revision}); run `{UPGRADE_COMMAND}`,"
            " then restart the app, job worker and DICOM node (in the container, restarting them does both)"
        )


if __name__ == "__main__":
    main()
