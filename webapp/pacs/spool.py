"""Files of the DICOM node under instance/dicom: received films waiting to be screened (spool/) and
results waiting to be delivered (outbox/). A file is written to a temporary name, flushed to disk and
renamed, and the folder itself is synced, so once `write` returns the file survives a power cut and
no reader ever sees half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import current_app

from ..private_files import open_private, remove_untouched

SPOOL, OUTBOX = "spool", "outbox"
# A file is named by its row within a second of being written (the receipt's insert, or the screening
# job's commit). One untouched this long that no row names was left by a process killed in between
# (or by a half-written `.part`): it will never be read, and it holds a patient's name.
ORPHAN_SECONDS = 600


def location(kind: str) -> Path:
    return Path(current_app.config["INSTANCE_DIR"]) / "dicom" / kind


def folder(kind: str) -> Path:
    path = location(kind)
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_name() -> str:
    # Random, so that a file name says nothing about the film in it.
    return secrets.token_hex(16) + ".dcm"


def write(kind: str, name: str, data: bytes) -> None:
    directory = folder(kind)
    final = directory / name
    temporary = directory / f".{name}.part"
    try:
        with open_private(temporary) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        # A disk that fills part-way: the half film holds a patient's name, and on a full disk the very
        # space the PACS's retry needs (until 5 December it stayed until the 10-minute orphan sweep).
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(directory)


def sync_folder(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(kind: str, name: str) -> bytes:
    return (folder(kind) / name).read_bytes()


def delete(kind: str, name: str | None) -> None:
    if name:
        (folder(kind) / name).unlink(missing_ok=True)


def remove_orphans(kind: str, named: set[str]) -> int:
    """Delete the files of `kind` that no row names (`named`) and nobody has touched for ORPHAN_SECONDS;
    returns how many."""
    directory = location(kind)
    if not directory.is_dir():  # no film ever came (and none is made here for a site without the node)
        return 0
    unnamed = (path for path in directory.iterdir() if path.name not in named and path.is_file())
    return remove_untouched(unnamed, ORPHAN_SECONDS)
