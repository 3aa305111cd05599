"""One C-STORE, as the node answers it: a CR or DX film is spooled to disk and queued for screening
before Success goes back; any other object is acknowledged and counted as skipped (a routing rule
that sends everything must not retry it forever); a second copy of an instance already received is
acknowledged and changes nothing.

The PACS is told Success only once the film is durably on disk and its job is on the queue; if
either fails it is told to try again later (Out of Resources) and nothing is left half-written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..jobs.queue import enqueue
from ..models import RECEIPT_QUEUED, RECEIPT_SKIPPED, DicomReceipt
from . import spool
from .pseudonyms import keyed_hash

log = logging.getLogger(__name__)

# Computed Radiography, Digital X-Ray for presentation and for processing: projection radiographs.
SCREENED_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1"}
)
SCREEN_TASK = "dicom.screen"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # "Refused: out of resources": the sender keeps the film and tries again


@dataclass(frozen=True)
class Arrival:
    """What the listener hands over: the file as received and the few elements the node acts on."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    modality: str
    calling_aet: str
    file_bytes: bytes  # DICOM file: preamble, file meta, the dataset as the sender encoded it


def receive(arrival: Arrival) -> int:
    """Record, spool and queue one instance; returns the C-STORE status to answer."""
    receipt = DicomReceipt(
        sop_key=keyed_hash(arrival.sop_instance_uid),
        study_key=keyed_hash(arrival.study_instance_uid),
        calling_aet=arrival.calling_aet[:16],
        sop_class_uid=arrival.sop_class_uid[:64],
        modality=arrival.modality[:16],
    )
    if already_received(receipt.sop_key):
        return SUCCESS
    if arrival.sop_class_uid not in SCREENED_SOP_CLASSES:
        receipt.state = RECEIPT_SKIPPED
        if record(receipt):
            log.info("dicom: receipt %d skipped (%s is not screened)", receipt.id, receipt.modality or "no modality")
        return SUCCESS
    receipt.state, receipt.spool_name = RECEIPT_QUEUED, spool.new_name()
    try:
        spool.write(spool.SPOOL, receipt.spool_name, arrival.file_bytes)
    except OSError:
        log.exception("dicom: could not spool a received film")
        spool.delete(spool.SPOOL, receipt.spool_name)
        return OUT_OF_RESOURCES
    if not record(receipt):
        spool.delete(spool.SPOOL, receipt.spool_name)  # a concurrent copy of the same instance won
        return SUCCESS
    try:
        enqueue(SCREEN_TASK, receipt.id)
    except Exception:  # the queue is unreachable: undo, and let the PACS send it again later
        log.exception("dicom: could not queue receipt %d", receipt.id)
        db.session.execute(db.delete(DicomReceipt).where(DicomReceipt.id == receipt.id))
        db.session.commit()
        spool.delete(spool.SPOOL, receipt.spool_name)
        return OUT_OF_RESOURCES
    log.info("dicom: receipt %d (%s) spooled and queued", receipt.id, receipt.modality or "no modality")
    return SUCCESS


def already_received(sop_key: str) -> bool:
    """Count the copy and say so when this instance is known."""
    result = db.session.execute(
        update(DicomReceipt)
        .where(DicomReceipt.sop_key == sop_key)
        .values(copies=DicomReceipt.copies + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def record(receipt: DicomReceipt) -> bool:
    """Insert the receipt; False when another association stored the same instance first."""
    db.session.add(receipt)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        already_received(receipt.sop_key)
        return False
    return True
