"""Films as a modality sends them: CR/DX DICOM files made from the fixture radiographs, each with its own
study and the identifying values of image_samples.PATIENT planted in it; and a small C-STORE client."""

from __future__ import annotations

import io
import socket

import numpy as np
from PIL import Image
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from tests.helpers import fixture_image
from tests.image_samples import PATIENT, dicom

FILMS = ("pneumonia.jpeg", "normal.jpeg", "pneumonia_2.jpeg", "normal_2.jpeg")
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MODALITY_AE = "MODALITY"
# A Device Observer UID for SRs built outside an app (the app draws its own: webapp/pacs/device.py).
DEVICE_UID = "1.2.826.0.1.3680043.8.498.1"


def film(index: int, modality: str = "CR") -> bytes:
    """The index-th film (fixture radiographs in turn), a new SOP instance in a new study."""
    pixels = np.asarray(Image.open(io.BytesIO(fixture_image(FILMS[index % len(FILMS)]))).convert("L"))
    extra = {"StudyID": f"S{index}", "PatientSex": "F", "StudyDate": "20260101", "StudyTime": "101010"}
    ds = dcmread(io.BytesIO(dicom(pixels.astype(np.uint8), modality=modality, extra=extra)))
    # CR film, or an image of another kind (MR: the node acknowledges and skips it).
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = {"CR": CR_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}.get(
        modality, ds.SOPClassUID
    )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def identifiers(data: bytes) -> list[str]:
    """What must never be stored in clear: the planted patient values and the film's UIDs."""
    ds = dcmread(io.BytesIO(data))
    return [PATIENT["PatientName"], PATIENT["PatientID"], PATIENT["AccessionNumber"]] + [
        str(ds.SOPInstanceUID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
    ]


def _no_delay(event) -> None:
    # On loopback a whole film fits in one TCP segment, which Nagle's algorithm holds until the node
    # acknowledges the small command PDU before it, and the node delays that ACK by 40 ms: 48 ms per
    # C-STORE against 5 ms without (docs/serving.md, "The floor"). On a network's 1,448-byte segments the
    # ACKs of full segments release it after a round trip; without Nagle the loopback sender is not held either.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def association(port: int, calling_aet: str = MODALITY_AE, called_aet: str = "CXRSCREEN"):
    ae = AE(ae_title=calling_aet)
    ae.requested_contexts = StoragePresentationContexts  # 120 storage classes, CR, DX and MR among them
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=called_aet, evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])


def echo(port: int, calling_aet: str = MODALITY_AE) -> int | None:
    """C-ECHO status, or None when the association is refused."""
    assoc = association(port, calling_aet)
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def store(port: int, files: list[bytes], calling_aet: str = MODALITY_AE) -> list[int]:
    """C-STORE each file on one association; returns the statuses."""
    assoc = association(port, calling_aet)
    assert assoc.is_established, "the node refused the association"
    try:
        return [assoc.send_c_store(dcmread(io.BytesIO(data))).Status for data in files]
    finally:
        assoc.release()


if __name__ == "__main__":
    # python -m tests.dicom_films PORT FOLDER: C-STORE every .dcm file of FOLDER (a modality in its own process).
    import sys
    from pathlib import Path

    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    statuses = store(port, [path.read_bytes() for path in sorted(folder.glob("*.dcm"))])
    sys.exit(0 if all(status == 0 for status in statuses) else 1)
