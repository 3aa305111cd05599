"""The validation-run job: every film of a run through the serving pipeline, resumable at any point.

A run's films are rows (ValidationItem) with a state. A job holds the run by a lease that it
renews with every batch; it takes the pending items a batch at a time and writes each batch's
results, the items' new states and the lease renewal in one transaction, only for items still
pending. So a worker killed at any moment loses at most the batch it had not committed, that
batch is simply still pending, and no film is ever counted twice, even if two jobs for the
same run overlap. When a lease runs out, recovery (jobs/queue.py) puts the run back on the
queue and the next job carries on from the first pending item.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError

from ..extensions import db
from ..inference.decode import DecodeError, decode
from ..inference.image import DecodedImage
from ..inference.overlay import heatmap_png
from ..inference.runtime import ModelUnavailable, analyzer_for
from ..jobs import leases
from ..jobs.leases import lease
from ..jobs.outage_log import log_not_queued
from ..jobs.queue import enqueue, enqueue_in, jobs, recovery, task
from ..models import (
    ITEM_DONE,
    ITEM_PENDING,
    ITEM_REFUSED,
    RUN_DONE,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RUNNING,
    ValidationItem,
    ValidationRun,
    utcnow,
)
from ..refusal import database_reason
from ..screening import review_copy
from ..site_threshold import active_calibration
from .report import run_metrics
from .storage import archive_path, remove_orphans

log = logging.getLogger(__name__)

TASK = "validation.run"
BATCH = 16  # films per forward pass and per transaction
# A run gives its worker thread back this often: it hands its lease back and queues its next slice
# behind the jobs waiting now, so films from the PACS are screened during a long run, not after it.
SLICE_SECONDS = 10.0


def start(run_id: int) -> None:
    enqueue(TASK, run_id)


@task(TASK)
def run_validation(run_id: int, held: bool = False) -> None:
    """`held`: this message looks again at a run a live job held, to take over only if that job died."""
    owner = leases.job_owner()
    run = db.session.get(ValidationRun, run_id)
    if run is None or run.status in (RUN_DONE, RUN_FAILED):
        return
    if held and run.lease_owner is None:
        # The job gave its turn up and queued its next slice itself. Taken here as well, the run went on
        # in two chains of slices for good (a second worker starting while the first worked a slice).
        return
    if not claim(run_id, owner):
        # A live job holds it. Look again when its lease would run out: if that job died, we take over.
        db.session.refresh(run)
        wait = leases.seconds_left(run.lease_until) if run.lease_until else lease().total_seconds()
        if run.status == RUN_RUNNING:
            enqueue_in(max(wait, 1.0) + 1.0, TASK, run_id, True)
        return
    try:
        with leases.stop_if_lease_lost(
            log, "validation run %d: lease lost (another job took it over, or it was cancelled); stopping", run_id
        ):
            process(run_id, owner)
    except ModelUnavailable as exc:
        fail(run_id, f"The model could not be loaded: {exc}")
    except OperationalError as exc:
        # The database busy (SQLite locked past its wait by another process) or briefly gone (PostgreSQL
        # restarting): not the run's fault. Until 5 December it failed the run for good with the driver's
        # text and deleted its archive; now the batch is rolled back and the run carries on from its
        # first pending film once its lease lapses (recovery, every minute), as a dead worker's would.
        db.session.rollback()
        log.warning("validation run %d waits: the database was not available (%s)", run_id, database_reason(exc))
    except Exception as exc:  # the run is marked failed with the reason; the worker lives on
        log.exception("validation run %d failed", run_id)
        fail(run_id, f"Unexpected error: {type(exc).__name__}: {exc}")


def claim(run_id: int, owner: str) -> bool:
    return leases.claim(ValidationRun, run_id, ValidationRun.status, (RUN_QUEUED, RUN_RUNNING), RUN_RUNNING, owner)


def renew(run_id: int, owner: str) -> None:
    leases.update_held(ValidationRun, run_id, owner, lease_until=utcnow() + lease())


def process(run_id: int, owner: str) -> None:
    run = db.session.get(ValidationRun, run_id)
    analyzer = analyzer_for(current_app.config)
    if run.model_version is None:
        calibration = active_calibration(analyzer.model_version)
        run.model_version = analyzer.model_version
        run.threshold = calibration.threshold if calibration else analyzer.threshold
        run.started_at = utcnow()
        renew(run_id, owner)
        db.session.commit()
    elif run.model_version != analyzer.model_version:
        fail(run_id, f"The model changed during the run ({run.model_version} -> {analyzer.model_version}).")
        return
    path = archive_path(run_id)
    if not path.is_file():
        fail(run_id, "The uploaded archive is no longer on the server; upload it again.")
        return
    review_size = current_app.config["REVIEW_IMAGE_SIZE"]
    slice_ends = time.monotonic() + SLICE_SECONDS
    with zipfile.ZipFile(path) as archive:
        while True:
            items = db.session.execute(
                select(ValidationItem.id, ValidationItem.entry)
                .where(ValidationItem.run_id == run_id, ValidationItem.state == ITEM_PENDING)
                .order_by(ValidationItem.id)
                .limit(BATCH)
            ).all()
            if not items:
                break
            # No transaction stays open while the batch is screened (seconds at the worker's low priority):
            # a DBA's idle_in_transaction_session_timeout shorter than that ended the session at every
            # batch, and the run was taken up again and again and never finished.
            db.session.commit()
            results = analyse_batch(archive, analyzer, [entry for _, entry in items], run.threshold, review_size)
            for (item_id, _), values in zip(items, results, strict=True):
                db.session.execute(
                    update(ValidationItem)
                    .where(ValidationItem.id == item_id, ValidationItem.state == ITEM_PENDING)
                    .values(processed_at=utcnow(), **values)
                    .execution_options(synchronize_session=False)
                )
            renew(run_id, owner)
            db.session.commit()
            if time.monotonic() > slice_ends:
                give_turn(run_id, owner)
                return
    finish(run_id, owner, analyzer.params.policy.uncertainty_band)


def give_turn(run_id: int, owner: str) -> None:
    """End this slice: the lease lapses now (so the next job, or recovery if the queue is down, takes
    the run at once) and the next slice is queued behind the jobs already waiting."""
    leases.give_up(ValidationRun, run_id, owner)
    db.session.commit()
    try:
        enqueue(TASK, run_id)
    except Exception as exc:  # the queue is down: the run's lease, lapsed and held again, is recovery's
        log_not_queued(log, exc, "validation run %d: its next slice could not be queued now; recovery will", run_id)
        leases.left_to_recovery(ValidationRun, run_id, owner)
        db.session.commit()


def analyse_batch(archive, analyzer, entries: list[str], threshold: float, review_size: int) -> list[dict]:
    """Column values for each entry: its result, or why it was refused. The serving pipeline's decode and analyzer."""
    results: list[dict | None] = [None] * len(entries)
    images: list[tuple[int, DecodedImage, bytes]] = []
    budget = current_app.config["DECODE_MEMORY_MB"]
    for i, entry in enumerate(entries):
        try:
            data = archive.read(entry)
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            results[i] = {"state": ITEM_REFUSED, "refusal": f"unreadable_member: cannot unpack ({exc})"}
            continue
        try:
            images.append((i, decode(data, target_size=analyzer.input_size, memory_mb=budget), data))
        except DecodeError as exc:
            results[i] = {
                "state": ITEM_REFUSED,
                "refusal": f"{exc.code}: {exc.message}",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
    if images:
        analyses = analyzer.analyze_batch([image for _, image, _ in images], threshold)
        for (i, image, data), analysis in zip(images, analyses, strict=True):
            results[i] = {
                "state": ITEM_DONE,
                "sha256": hashlib.sha256(data).hexdigest(),
                "image_format": image.format,
                "label": analysis.label,
                "p_pneumonia": float(analysis.probabilities["PNEUMONIA"]),
                "chest_probability": float(analysis.chest_probability),
                "feature_distance": float(analysis.feature_distance),
                "unknown_reason": analysis.unknown_reason,
                "review_png": review_copy.make(data, image, review_size, budget),  # like a prediction's copy
                "heatmap_png": heatmap_png(analysis.heatmap),
            }
    return results


def finish(run_id: int, owner: str, uncertainty_band: float) -> None:
    run = db.session.get(ValidationRun, run_id)
    # Only the lease holder may finish the run: the ownership check and the update are one statement.
    leases.update_held(
        ValidationRun,
        run_id,
        owner,
        status=RUN_DONE,
        metrics=run_metrics(run, uncertainty_band),
        finished_at=utcnow(),
        lease_owner=None,
        lease_until=None,
    )
    db.session.commit()
    archive_path(run_id).unlink(missing_ok=True)  # the archive is kept only while the run needs it


def ended_unfinished(message: str) -> dict:
    """The columns of a run that ends without finishing (failed, or cancelled by an admin): why and
    when, and no job holding it. Its archive goes too, once committed."""
    return {"status": RUN_FAILED, "error": message, "finished_at": utcnow(), "lease_owner": None, "lease_until": None}


def fail(run_id: int, message: str) -> None:
    db.session.rollback()
    db.session.execute(update(ValidationRun).where(ValidationRun.id == run_id).values(**ended_unfinished(message)))
    db.session.commit()
    archive_path(run_id).unlink(missing_ok=True)


@recovery
def resume_validation_runs(*, on_start: bool = False) -> int:
    """Re-enqueue runs that a dead worker left: running with a lapsed lease, or queued while the
    queue holds nothing (their message was lost). A worker that starts also re-enqueues the runs held
    by a job, lapsed or not: the worker it replaces may have died holding one. Archives that no run
    will read are removed."""
    now = utcnow()
    unfinished = select(ValidationRun.id).where(ValidationRun.status.in_((RUN_QUEUED, RUN_RUNNING)))
    if removed := remove_orphans(set(db.session.scalars(unfinished))):
        log.info("removed %d validation archive(s) that no run will read", removed)
    held = ValidationRun.lease_owner.is_not(None) if on_start else leases.lapsed(ValidationRun, now)
    if jobs().pending_work():
        # The messages of queued runs, and of runs between slices, are on it. Until 5 December a
        # starting worker queued those runs again too: one more chain of slices for good, per restart.
        query = unfinished.where(ValidationRun.status == RUN_RUNNING, held)
    elif on_start:
        query = unfinished
    else:
        query = unfinished.where(or_(ValidationRun.status == RUN_QUEUED, ValidationRun.lease_until < now))
    run_ids = list(db.session.scalars(query))
    for run_id in run_ids:
        enqueue(TASK, run_id)
    return len(run_ids)
