"""The node's jobs on the app's queue (jobs/queue.py): screen a received film, deliver a result.

Screening a film: the job takes the receipt by a lease, runs the film through the same decode and
model as an upload, builds the SR and the secondary capture, writes them to the outbox folder, and
commits the prediction, the outbox rows and the receipt's new state in one transaction, only if it
still holds the lease. Then it deletes the spooled film. A worker killed at any point leaves either
nothing committed (the film is screened again once the lease runs out) or everything (the leftover
spool file is deleted by recovery): each film gets exactly one prediction and one pair of results.

Delivering a result: one C-STORE, tried first by the job that screened the film; on failure the
wait before the next try doubles up to DICOM_SEND_MAX_BACKOFF_SECONDS, so a PACS down for minutes
gets its results minutes later. A refusal no try can change (sender.Refused) ends the tries at once:
the result is listed as refused, with the PACS's reason, until an administrator sends it again. A
result is delivered, then its file (the only copy of the patient's name the node ever keeps) is
deleted.
"""

from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timedelta

import numpy as np
from flask import current_app
from PIL import Image
from pydicom import dcmread
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import OperationalError

from ..extensions import db
from ..inference.decode import DecodeError, decode
from ..inference.runtime import ModelUnavailable, analyzer_for
from ..jobs import leases
from ..jobs.leases import lease
from ..jobs.queue import enqueue, enqueue_in, jobs, recovery, task
from ..models import (
    RECEIPT_QUEUED,
    RECEIPT_REFUSED,
    RECEIPT_SCREENED,
    RECEIPT_SCREENING,
    RESULT_FAILED,
    RESULT_PENDING,
    RESULT_REFUSED,
    RESULT_SENT,
    RESULT_UNDELIVERED,
    SOURCE_DICOM,
    DicomReceipt,
    DicomResult,
    as_utc,
    utcnow,
)
from ..screening.service import analyse
from . import spool
from .device import device_uid
from .intake import SCREEN_TASK
from .results import MissingIdentifier, Verdict, build_capture, build_sr, encode
from .sender import Refused, SendError, StoreAborted, parse_destination, send

log = logging.getLogger(__name__)

SEND_TASK = "dicom.send"
FIRST_RETRY_SECONDS = 5
LAST_ERROR_CHARS = 500
# A PACS that accepts the association and aborts the C-STORE this many tries in a row (over 15 s of
# back-off) is taken to refuse the node: Orthanc does so to an AE title it does not list, and each try
# was answered the same, 60 times over 4.5 hours, as "gave no answer". A PACS that fell over mid-store
# is unreachable or answers at the next try, which breaks the row.
ABORTS_BEFORE_REFUSAL = 3


@task(SCREEN_TASK)
def screen(receipt_id: int) -> None:
    owner = leases.job_owner()
    if not claim(receipt_id, owner):
        receipt = db.session.get(DicomReceipt, receipt_id)
        if receipt is not None and receipt.state == RECEIPT_SCREENING and receipt.lease_until:
            # A job holds it: look again when its lease would run out, and take over if that job died.
            enqueue_in(max(leases.seconds_left(receipt.lease_until), 0.0) + 1.0, SCREEN_TASK, receipt_id)
        return
    try:
        with leases.stop_if_lease_lost(log, "dicom: receipt %d was taken over by another job; stopping", receipt_id):
            process(receipt_id, owner)
    except ModelUnavailable:
        db.session.rollback()  # an operator problem: the film waits for the lease to lapse and is tried again
        log.error("dicom: receipt %d waits: the model is not available", receipt_id)
    except OperationalError as exc:
        # The database busy (SQLite locked by another writer) or briefly unreachable: not the film's
        # fault, so it is not refused; it waits for the lease to lapse and is screened again.
        db.session.rollback()
        log.warning("dicom: receipt %d waits: the database was not available (%s)", receipt_id, type(exc.orig).__name__)
    except OutboxUnwritable as exc:
        # No room (or no permission) for its results: not the film's fault either. It waits, still spooled,
        # and its results are built again once the disk has room (until 5 December the result was marked
        # failed for good, "could not be built from the film (OSError)", and the film's spool copy deleted).
        db.session.rollback()
        log.warning("dicom: receipt %d waits: its results cannot be written to the outbox (%s)", receipt_id, exc)
    except Exception as exc:  # a film the pipeline cannot handle must not come back for ever
        db.session.rollback()
        # Only the type: the message of an error raised while reading the dataset may quote it.
        log.error("dicom: receipt %d could not be screened (%s)", receipt_id, type(exc).__name__)
        refuse(receipt_id, owner, f"Unexpected error while screening the film ({type(exc).__name__}).")


class OutboxUnwritable(Exception):
    """A result file could not be written to the outbox (a full disk): the screening waits and is done again."""


def claim(receipt_id: int, owner: str) -> bool:
    return leases.claim(
        DicomReceipt, receipt_id, DicomReceipt.state, (RECEIPT_QUEUED, RECEIPT_SCREENING), RECEIPT_SCREENING, owner
    )


def finish(receipt_id: int, owner: str, **values) -> None:
    """Set the receipt's final state, in the caller's transaction, only while this job holds it."""
    leases.update_held(DicomReceipt, receipt_id, owner, lease_owner=None, lease_until=None, **values)


def process(receipt_id: int, owner: str) -> None:
    started = time.perf_counter()
    spool_name = db.session.get(DicomReceipt, receipt_id).spool_name
    # No transaction stays open while the film is screened (seconds for a large film at the worker's low
    # priority): a DBA's idle_in_transaction_session_timeout shorter than that ended the session every
    # time, and the film waited, was taken up again and again, and was never screened.
    db.session.commit()
    try:
        data = spool.read(spool.SPOOL, spool_name)
    except (OSError, TypeError):
        refuse(receipt_id, owner, "The spooled film is missing from the server; ask the PACS to send it again.")
        return
    model = analyzer_for(current_app.config)
    try:
        image = decode(data, target_size=model.input_size, memory_mb=current_app.config["DECODE_MEMORY_MB"])
    except DecodeError as exc:
        refuse(receipt_id, owner, f"{exc.code}: {exc.message}")
        return
    prediction, analysis, _ = analyse(model, image, data)  # the full-size review copy at once: no one waits
    prediction.source, prediction.filename = SOURCE_DICOM, f"pacs-{receipt_id}.dcm"
    prediction.latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
    db.session.add(prediction)
    results = build_results(receipt_id, data, analysis)
    db.session.add_all(results)
    db.session.flush()  # the prediction's id
    finish(receipt_id, owner, state=RECEIPT_SCREENED, prediction_id=prediction.id, spool_name=None)
    db.session.commit()
    spool.delete(spool.SPOOL, spool_name)
    log.info("dicom: receipt %d screened as prediction %d (%s)", receipt_id, prediction.id, prediction.label)
    # Delivered by this job, at once: queued behind a burst of films, results would wait for all of them.
    # A failed delivery schedules its own retry.
    for result_id in [result.id for result in results if result.file_name]:
        deliver(result_id)


def refuse(receipt_id: int, owner: str, message: str) -> None:
    spool_name = db.session.get(DicomReceipt, receipt_id).spool_name
    finish(receipt_id, owner, state=RECEIPT_REFUSED, error=message, spool_name=None)
    db.session.commit()
    spool.delete(spool.SPOOL, spool_name)
    log.warning("dicom: receipt %d refused: %s", receipt_id, message)


def build_results(receipt_id: int, data: bytes, analysis) -> list[DicomResult]:
    """The SR and the secondary capture, written to the outbox folder; none when no destination is set.

    A result that cannot be built (a header highdicom will not take) is recorded as a failed result with
    the reason, as a failed delivery is, and the other result and the prediction are kept: the film was
    screened, and refusing it would throw the verdict away. One that cannot be written (a full disk)
    raises OutboxUnwritable: built again later, it is delivered after all."""
    if not current_app.config.get("DICOM_RESULTS_DESTINATION"):
        return []
    verdict = Verdict(
        label=analysis.label,
        p_pneumonia=float(analysis.probabilities["PNEUMONIA"]),
        threshold=float(analysis.threshold),
        unknown_reason=analysis.unknown_reason,
        model_version=analysis.model_version,
        caution=analysis.caution,
    )

    def capture(source):
        size = current_app.config["DICOM_CAPTURE_SIZE"]
        pixels = fit(decode(data, target_size=size, memory_mb=current_app.config["DECODE_MEMORY_MB"]).pixels, size)
        return build_capture(source, verdict, pixels, analysis.heatmap)

    results = []
    for kind, build in (("SR", lambda source: build_sr(source, verdict, device_uid())), ("SC", capture)):
        # Named after the receipt: a job that dies before committing leaves files the next one overwrites.
        name = f"{receipt_id}-{kind.lower()}.dcm"
        try:
            # The whole dataset, Patient module included, is read here in memory and nowhere kept but in
            # the outbox files, which are deleted once delivered.
            encoded = encode(build(dcmread(io.BytesIO(data))))
        except Exception as exc:  # noqa: BLE001  the prediction stands whatever happens to its results
            spool.delete(spool.OUTBOX, name)
            # Only the type (or the name of a missing UID): highdicom's and pydicom's messages quote the
            # offending header value.
            why = str(exc) if isinstance(exc, MissingIdentifier) else type(exc).__name__
            error = f"The {kind} could not be built from the film ({why}); it was not sent."
            log.error("dicom: receipt %d: %s", receipt_id, error)
            results.append(DicomResult(receipt_id=receipt_id, kind=kind, state=RESULT_FAILED, last_error=error))
            continue
        try:
            spool.write(spool.OUTBOX, name, encoded)
        except OSError as exc:
            for written in results:  # named by no row once the screening rolls back
                spool.delete(spool.OUTBOX, written.file_name)
            raise OutboxUnwritable(f"{kind}: {exc.strerror}") from exc
        results.append(DicomResult(receipt_id=receipt_id, kind=kind, file_name=name))
    return results


def fit(pixels: np.ndarray, size: int) -> np.ndarray:
    """The film no larger than `size` on its long side (the capture a viewer shows, not the original)."""
    if max(pixels.shape) <= size:
        return pixels
    image = Image.fromarray(np.asarray(pixels, np.float32), mode="F")
    scale = size / max(pixels.shape)
    width, height = max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX), dtype=np.float32)


@task(SEND_TASK)
def deliver(result_id: int, attempts: int | None = None) -> None:
    """`attempts`: the result's tries when this message was queued (None: a message of before 5 December,
    or the screening job's own first try). A message whose result was tried since is a duplicate."""
    now = utcnow()
    # Taking the result is one statement, so two jobs for the same result cannot both send it.
    taken = db.session.execute(
        update(DicomResult)
        .where(
            DicomResult.id == result_id,
            DicomResult.state == RESULT_PENDING,
            DicomResult.next_attempt_at <= now + timedelta(seconds=1),
            or_(DicomResult.lease_until.is_(None), DicomResult.lease_until < now),
        )
        .values(lease_until=now + lease())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if taken.rowcount != 1:
        look_again_when_due(result_id, now, attempts)
        return
    result = db.session.get(DicomResult, result_id)
    config = current_app.config
    try:
        if not config.get("DICOM_RESULTS_DESTINATION"):
            raise SendError("DICOM_RESULTS_DESTINATION is not set")
        destination = parse_destination(config["DICOM_RESULTS_DESTINATION"])
        send(destination, config["DICOM_AE_TITLE"], spool.read(spool.OUTBOX, result.file_name), config=config)
    except Refused as exc:
        refused(result, str(exc))
        return
    except StoreAborted as exc:
        aborts = result.aborts_in_a_row + 1
        if aborts >= ABORTS_BEFORE_REFUSAL:
            refused(result, f"{exc} (aborted {aborts} tries in a row; not tried again)", aborts)
        else:
            retry_later(result, aborted_note(str(exc), aborts), aborts)
        return
    except (SendError, ValueError, OSError) as exc:
        retry_later(result, str(exc) or type(exc).__name__)
        return
    file_name = result.file_name
    result.state, result.sent_at, result.file_name, result.lease_until = RESULT_SENT, utcnow(), None, None
    result.attempts += 1
    result.last_error, result.aborts_in_a_row = None, 0
    db.session.commit()
    spool.delete(spool.OUTBOX, file_name)
    log.info("dicom: result %d (%s of receipt %d) delivered", result.id, result.kind, result.receipt_id)


def look_again_when_due(result_id: int, now: datetime, attempts: int | None) -> None:
    """A pending result, held by no job, whose next try is not yet due by this worker's clock: its time
    was written by another process whose clock runs ahead (an administrator's Retry on a web replica, a
    retry released by another worker's scheduler). Until 5 December the message was dropped, and the
    result waited for the recovery sweep (a minute, and for ever while the queue stayed busy).
    Not a message whose result was tried since it was queued: that try queued its own. Looked at again,
    such a duplicate (recovery's at a worker's start, beside the retry's own the scheduler released
    late) lived on beside it round after round."""
    result = db.session.get(DicomResult, result_id)
    if result is None or result.state != RESULT_PENDING:
        return  # sent, or given up
    if attempts is not None and result.attempts != attempts:
        return  # tried since: the next try has its message
    if result.lease_until is not None and as_utc(result.lease_until) >= now:
        return  # a job holds it and carries on
    wait = (as_utc(result.next_attempt_at) - now).total_seconds()
    if wait > 0:
        enqueue_in(wait, SEND_TASK, result_id, result.attempts)


def aborted_note(error: str, aborts: int) -> str:
    return f"{error} (aborted {aborts} of {ABORTS_BEFORE_REFUSAL} tries in a row before it is taken as a refusal)"


def retry_later(result: DicomResult, error: str, aborts: int = 0) -> None:
    """`aborts`: the tries in a row, this one included, the PACS accepted and aborted (0: this one was not)."""
    config = current_app.config
    result.attempts += 1
    result.last_error, result.aborts_in_a_row = error[:LAST_ERROR_CHARS], aborts
    result.lease_until = None
    if result.attempts >= config["DICOM_SEND_MAX_ATTEMPTS"]:
        result.state = RESULT_FAILED
        db.session.commit()
        log.error("dicom: result %d not delivered after %d tries: %s", result.id, result.attempts, error)
        return
    wait = min(FIRST_RETRY_SECONDS * 2 ** (result.attempts - 1), config["DICOM_SEND_MAX_BACKOFF_SECONDS"])
    result.next_attempt_at = utcnow() + timedelta(seconds=wait)
    db.session.commit()
    log.warning("dicom: result %d not delivered (try %d), next in %ds: %s", result.id, result.attempts, wait, error)
    enqueue_in(wait, SEND_TASK, result.id, result.attempts)


def refused(result: DicomResult, error: str, aborts: int = 0) -> None:
    """The PACS refused the result for a reason no later try changes: tried again, it was refused 60
    times over four and a half hours. It waits, with the reason, for an administrator's retry."""
    result.attempts += 1
    result.state, result.last_error, result.lease_until = RESULT_REFUSED, error[:LAST_ERROR_CHARS], None
    result.aborts_in_a_row = aborts
    db.session.commit()
    log.error("dicom: result %d refused by the PACS, not tried again: %s", result.id, error)


def requeue(result: DicomResult) -> bool:
    """An administrator's retry of a failed or refused result: back to pending, tried now. False, with
    nothing written, when it no longer waits for one (retried or discarded meanwhile)."""
    if not _if_still_undelivered(
        result, state=RESULT_PENDING, attempts=0, aborts_in_a_row=0, next_attempt_at=utcnow(), lease_until=None
    ):
        return False
    db.session.commit()
    enqueue(SEND_TASK, result.id, 0)
    return True


def discard(result: DicomResult) -> bool:
    """An administrator gives up on a failed or refused result: its file (with the patient's name) is
    deleted. False, with nothing written, when it no longer waits for that (retried or discarded meanwhile)."""
    file_name = result.file_name
    note = func.coalesce(DicomResult.last_error, "").concat(" (discarded by an administrator)")
    if not _if_still_undelivered(result, file_name=None, last_error=note):
        return False
    db.session.commit()
    spool.delete(spool.OUTBOX, file_name)
    return True


def _if_still_undelivered(result: DicomResult, **values) -> bool:
    """Write `values`, in the caller's transaction, only if the result still waits for an administrator
    as the caller saw it: check and write in one statement, so that of a retry and a discard at the same
    moment (two administrators, a double-click) one acts and the other finds it done. A retry and a
    discard both acting left it pending with no file to send, failing for ever."""
    written = db.session.execute(
        update(DicomResult)
        .where(
            DicomResult.id == result.id,
            DicomResult.state.in_(RESULT_UNDELIVERED),
            DicomResult.file_name == result.file_name,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return written.rowcount == 1


@recovery
def recover(*, on_start: bool = False) -> int:
    """Put back what dead workers or lost queue messages left: films not screened (queued, or held by a
    lapsed lease), results overdue for delivery; and delete spool files of films already screened, and
    files no row names at all."""
    now = utcnow()
    unfinished = DicomReceipt.state.in_((RECEIPT_QUEUED, RECEIPT_SCREENING))
    stale = or_(DicomReceipt.lease_until.is_(None), DicomReceipt.lease_until < now)
    query = select(DicomReceipt.id).where(unfinished)
    if not on_start:
        # While the queue holds messages, queued films are on it; only lapsed leases need help.
        if jobs().pending_work():
            query = query.where(DicomReceipt.state == RECEIPT_SCREENING, DicomReceipt.lease_until < now)
        else:
            query = query.where(stale)
    receipt_ids = list(db.session.scalars(query))
    for receipt_id in receipt_ids:
        enqueue(SCREEN_TASK, receipt_id)
    # A delivery a minute past its time, with nothing left on the queue, lost its message (or its worker).
    overdue = []
    if on_start or not jobs().pending_work():
        overdue = list(
            db.session.execute(
                select(DicomResult.id, DicomResult.attempts).where(
                    DicomResult.state == RESULT_PENDING,
                    DicomResult.next_attempt_at < now - timedelta(seconds=60),
                    or_(DicomResult.lease_until.is_(None), DicomResult.lease_until < now),
                )
            )
        )
    for result_id, attempts in overdue:
        enqueue(SEND_TASK, result_id, attempts)
    leftovers = db.session.execute(
        select(DicomReceipt.id, DicomReceipt.spool_name).where(and_(~unfinished, DicomReceipt.spool_name.is_not(None)))
    ).all()
    for receipt_id, name in leftovers:
        spool.delete(spool.SPOOL, name)
        db.session.execute(update(DicomReceipt).where(DicomReceipt.id == receipt_id).values(spool_name=None))
    db.session.commit()
    remove_unnamed_files()
    return len(receipt_ids) + len(overdue)


def remove_unnamed_files() -> None:
    """Films and results on disk that no row names: a listener or worker killed between writing the file
    and committing its row (the PACS sends the film again, the job writes its results again)."""
    spooled = set(db.session.scalars(select(DicomReceipt.spool_name).where(DicomReceipt.spool_name.is_not(None))))
    waiting = set(db.session.scalars(select(DicomResult.file_name).where(DicomResult.file_name.is_not(None))))
    db.session.commit()
    removed = spool.remove_orphans(spool.SPOOL, spooled) + spool.remove_orphans(spool.OUTBOX, waiting)
    if removed:
        log.info("dicom: removed %d file(s) in the spool or outbox that no film or result names", removed)
