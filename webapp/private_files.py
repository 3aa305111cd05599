"""Files that hold patient data or secrets are readable by the app's own user only (mode 0600)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE = 0o600
log = logging.getLogger(__name__)


def make_private(path: Path) -> None:
    """Take group and other permissions off an existing file (when this user owns it)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(PRIVATE)
    except FileNotFoundError:
        return
    except PermissionError:
        log.warning("%s is readable by others and not ours to change; restrict it to mode 0600", path)


def sqlite_database_file(database_uri: str) -> Path | None:
    url = make_url(database_uri)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_private_sqlite(database_uri: str) -> None:
    """Create the SQLite file with mode 0600 before SQLite would create it with the umask's mode.
    SQLite gives its -wal and -shm files the same mode as the database file."""
    path = sqlite_database_file(database_uri)
    if path is None:
        return
    if path.parent.is_dir() and not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE))
    make_private(path)
