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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import make_url  # noqa: E402

from webapp.config import config_from_env  # noqa: E402


def live_database() -> Path:
    url = make_url(config_from_env().SQLALCHEMY_DATABASE_URI)
    if url.get_backend_name() != "sqlite" or not url.database:
        sys.exit("DATABASE_URL is not a SQLite file; for PostgreSQL use pg_dump / pg_restore (see the README).")
    return Path(url.database)


def copy(source: Path, target: Path) -> None:
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        problems = dst.execute("PRAGMA integrity_check").fetchone()[0]
    if problems != "ok":
        sys.exit(f"integrity check of {target} failed: {problems}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Online backup/restore of the app's SQLite database.")
    parser.add_argument("action", choices=("backup", "restore"))
    parser.add_argument("file", type=Path, help="backup file to write (backup) or read (restore)")
    args = parser.parse_args()
    live = live_database()
    if args.action == "backup":
        if args.file.exists():
            sys.exit(f"{args.file} exists; choose a new name so no backup is overwritten")
        copy(live, args.file)
        print(f"backed up {live} to {args.file}")
    else:
        if not args.file.is_file():
            sys.exit(f"no backup file {args.file}")
        copy(args.file, live)
        print(f"restored {live} from {args.file}")


if __name__ == "__main__":
    main()
