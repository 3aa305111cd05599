"""One C-STORE, as the node answers it: a CR or DX film is spooled to disk and queued for screening
before Success goes back; any other object is acknowledged and counted as skipped (a routing rule
that sends everything must not retry it forever); a second copy of an instance already received is
acknowledged and changes nothing, unless that instance was refused: then the copy is the re-send the
refusal asked for, and it is taken in and screened again.

The PACS is told Success only once the film is durably on disk and its job is on the queue; if
either fails it is told to try again later (Out of Resources) and nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..jobs.outage_log import log_not_queued
from ..jobs.queue import enqueue
from ..models import RECEIPT_QUEUED, RECEIPT_REFUSED, RECEIPT_SKIPPED, DicomReceipt
from ..pseudonyms import keyed_hash
from . import spool

log = logging.getLogger(__name__)

# Computed Radiography, Digital X-Ray for presentation and for processing: projection radiographs.
SCREENED_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1"}
)
SCREEN_TASK = "dicom.screen"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # "Refused: out of resources": the sender keeps the film and tries again
# "Error: cannot understand": a data set that cannot be parsed, so the sender stops sending it and its
# operator sees the failure (sending it again would fail the same way).
CANNOT_UNDERSTAND = 0xC000


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
    screened = arrival.sop_class_uid in SCREENED_SOP_CLASSES
    if screened and was_refused(receipt.sop_key):
        return receive_again(receipt.sop_key, arrival)
    if already_received(receipt.sop_key):
        return SUCCESS
    if not screened:
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
    with removed_on_error(receipt.spool_name):
        recorded = record(receipt)
    if not recorded:
        spool.delete(spool.SPOOL, receipt.spool_name)  # a concurrent copy of the same instance won
        return SUCCESS
    try:
        enqueue(SCREEN_TASK, receipt.id)
    except Exception as exc:  # the queue is unreachable: undo, and let the PACS send it again later
        log_not_queued(log, exc, "dicom: could not queue receipt %d; the PACS is told to send it again", receipt.id)
        db.session.execute(db.delete(DicomReceipt).where(DicomReceipt.id == receipt.id))
        db.session.commit()
        spool.delete(spool.SPOOL, receipt.spool_name)
        return OUT_OF_RESOURCES
    log.info("dicom: receipt %d (%s) spooled and queued", receipt.id, receipt.modality or "no modality")
    return SUCCESS


def was_refused(sop_key: str) -> bool:
    state = db.session.scalar(db.select(DicomReceipt.state).where(DicomReceipt.sop_key == sop_key))
    db.session.commit()
    return state == RECEIPT_REFUSED


def receive_again(sop_key: str, arrival: Arrival) -> int:
    """A refused film sent again: its receipt goes back to queued with the new copy spooled. The refusal
    told the PACS to send it again (or the film was fixed), so counting it as a duplicate would leave
    it unscreened for ever."""
    spool_name = spool.new_name()
    try:
        spool.write(spool.SPOOL, spool_name, arrival.file_bytes)
    except OSError:
        log.exception("dicom: could not spool a film sent again")
        spool.delete(spool.SPOOL, spool_name)
        return OUT_OF_RESOURCES
    # One statement, conditional on the refused state: of two copies arriving at once only one takes it.
    with removed_on_error(spool_name):
        taken = db.session.execute(
            update(DicomReceipt)
            .where(DicomReceipt.sop_key == sop_key, DicomReceipt.state == RECEIPT_REFUSED)
            .values(state=RECEIPT_QUEUED, spool_name=spool_name, error=None, copies=DicomReceipt.copies + 1)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    if taken.rowcount != 1:
        spool.delete(spool.SPOOL, spool_name)
        already_received(sop_key)
        return SUCCESS
    receipt_id = db.session.scalar(db.select(DicomReceipt.id).where(DicomReceipt.sop_key == sop_key))
    try:
        enqueue(SCREEN_TASK, receipt_id)
    except Exception as exc:  # the queue is unreachable: refused as before, and the PACS sends it again later
        log_not_queued(log, exc, "dicom: could not queue receipt %d; the PACS is told to send it again", receipt_id)
        db.session.execute(
            update(DicomReceipt)
            .where(DicomReceipt.id == receipt_id)
            .values(state=RECEIPT_REFUSED, spool_name=None, error="The film could not be queued; send it again.")
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        spool.delete(spool.SPOOL, spool_name)
        return OUT_OF_RESOURCES
    log.info("dicom: receipt %d, refused before, spooled and queued again", receipt_id)
    return SUCCESS


@contextlib.contextmanager
def removed_on_error(spool_name: str):
    """Delete the spooled film if its receipt cannot be written (SQLite locked, PostgreSQL gone): the PACS
    is answered Out of Resources and sends the film again, so this copy, the patient's name in it, would be
    named by no row and deleted by nobody (recovery's sweep only catches what a killed process leaves)."""
    try:
        yield
    except Exception:
        spool.delete(spool.SPOOL, spool_name)
        raise


def already_received(sop_key: str) -> bool:
    """Count the copy and say so when this instance is known (and not refused: see receive_again)."""
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
