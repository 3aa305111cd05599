"""The installation's Device Observer UID: the device the SRs name as their observer (TID 1004).

One UID per installation, the same in every report: a PACS or a registry that groups reports by the
device that made them (to audit an AI's results, or to withdraw them) must see one device, not a new
one per report (as it did until 4 December). Drawn once, with the same root as the results' other
UIDs, and kept in instance/dicom/device-uid, which the listener and every worker share (they share the
spool), so it needs no setting and differs between installations. Deleting the file gives the
installation a new device UID from the next report on.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import current_app
from pydicom.uid import generate_uid

from ..private_files import open_private
from .spool import sync_folder

DEVICE_UID_FILE = "device-uid"


def device_uid() -> str:
    """This installation's Device Observer UID, drawn and written the first time it is asked for."""
    directory = Path(current_app.config["INSTANCE_DIR"]) / "dicom"
    path = directory / DEVICE_UID_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{DEVICE_UID_FILE}.{secrets.token_hex(8)}.part"
        with open_private(temporary) as handle:
            handle.write(generate_uid().encode())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # A link, not a rename: of two workers drawing a UID at once, the first one's stays.
            os.link(temporary, path)
            sync_folder(directory)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()
