"""Files that hold patient data or secrets are readable by the app's own user only (mode 0600), and
those a killed process abandoned are swept up."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

PRIVATE = 0o600
log = logging.getLogger(__name__)


def make_private(path: Path) -> None:
    """Take group and other permissions off an existing file (when this user owns it)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(PRIVATE)
    except FileNotFoundError:
        return
    except OSError:  # not ours (EPERM), or a read-only mount (EROFS), e.g. a key mounted from a secret store
        log.warning("%s is readable by others and not ours to change; restrict it to mode 0600", path)


def open_private(path: Path):
    """Open a new file for writing with mode 0600 from the start, whatever the umask (films from the
    PACS, validation archives: they carry patients' names, ids and birth dates)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE), "wb")


def private_sqlite_file(database: str) -> None:
    """Create a SQLite database file with mode 0600 before SQLite would create it with the umask's mode
    (SQLite gives its -wal and -shm files the mode of the database file), or tighten an existing one."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.exists() and path.parent.is_dir():
        with contextlib.suppress(FileExistsError):  # another worker created it first
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE))
    make_private(path)


def remove_untouched(paths: Iterable[Path], seconds: float) -> int:
    """Delete those of `paths` nobody has written for `seconds` (a file still being written is touched
    every few seconds); returns how many. Another worker's sweep may take one first."""
    cutoff = time.time() - seconds
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
