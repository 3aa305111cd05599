"""Files of the DICOM node under instance/dicom: received films waiting to be screened (spool/) and
results waiting to be delivered (outbox/). A file is written to a temporary name, flushed to disk and
renamed, and the folder itself is synced, so once `write` returns the file survives a power cut and
no reader ever sees half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import current_app

from ..private_files import open_private

SPOOL, OUTBOX = "spool", "outbox"


def folder(kind: str) -> Path:
    path = Path(current_app.config["INSTANCE_DIR"]) / "dicom" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_name() -> str:
    # Random, so that a file name says nothing about the film in it.
    return secrets.token_hex(16) + ".dcm"


def write(kind: str, name: str, data: bytes) -> None:
    directory = folder(kind)
    final = directory / name
    temporary = directory / f".{name}.part"
    with open_private(temporary) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
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
