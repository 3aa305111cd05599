"""Create a validation run from an uploaded archive: check it, store it, list its films, queue the job.

Nothing is kept for a refused archive: it is checked in a temporary file that is removed on any
refusal, and the run, its items and the stored archive appear together or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid

from flask import current_app
from sqlalchemy import func, insert, select, update
from werkzeug.datastructures import FileStorage

from ..extensions import db
from ..filenames import sanitize_filename, sent_filename
from ..jobs.outage_log import log_not_queued
from ..models import (
    ITEM_PENDING,
    RUN_QUEUED,
    RUN_RUNNING,
    User,
    ValidationItem,
    ValidationRun,
    record_audit,
)
from ..private_files import open_private
from . import tasks
from .archive import ArchiveRejected, inspect_archive
from .storage import archive_folder, archive_path

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


def record_report_viewed(run: ValidationRun, actor: str, via: str) -> None:
    """A finished run's report names films as they were named in the archive (often after the patient:
    the worst errors, the refused and duplicate members), on the report page and in the API's answer,
    so each look at it is in the audit trail, as each page of the history is. A run still working
    shows only its progress: the page's timed refresh and a script's polling are recorded from the
    answer that carries the report on."""
    if run.metrics:
        record_audit(actor, "validation_report_viewed", f"validation run {run.id}", via)
        db.session.commit()


def upload_limit() -> int:
    """The largest request body a validation upload may send: the archive limit plus form overhead."""
    return current_app.config["VALIDATION_MAX_BYTES"] + CHUNK


def too_large() -> ArchiveRejected:
    """The refusal of an archive over VALIDATION_MAX_BYTES, naming that limit (not the request's, which
    adds room for the form around the archive), the same on the page and the API."""
    limit_mb = current_app.config["VALIDATION_MAX_BYTES"] / 1e6
    return ArchiveRejected("archive_too_large", f"The archive is larger than {limit_mb:.0f} MB.", 413)


def create_run(user: User, upload: FileStorage | None) -> ValidationRun:
    """A queued run for the uploaded archive; raises ArchiveRejected (nothing stored) if unusable."""
    if upload is None or not upload.filename:
        raise ArchiveRejected(
            "no_file",
            "Send the archive as a ZIP file in a file part named 'archive', with a filename "
            "(curl -F archive=@site.zip; a part without a filename is read as text).",
            400,
        )
    max_bytes = current_app.config["VALIDATION_MAX_BYTES"]
    folder = archive_folder()
    folder.mkdir(parents=True, exist_ok=True)
    upload_path = folder / f"upload-{uuid.uuid4().hex}.zip"
    final_path = None
    try:
        digest = _save(upload, upload_path, max_bytes)
        films = inspect_archive(upload_path, max_files=current_app.config["VALIDATION_MAX_FILES"], max_bytes=max_bytes)
        run = ValidationRun(
            created_by_id=user.id,
            archive_name=sanitize_filename(sent_filename(upload)),
            archive_sha256=digest,
            status=RUN_QUEUED,
        )
        db.session.add(run)
        db.session.flush()
        db.session.execute(
            insert(ValidationItem),
            [{"run_id": run.id, "entry": film.entry, "truth": film.truth, "state": ITEM_PENDING} for film in films],
        )
        record_audit(user.username, "validation.create", f"validation run {run.id}", f"{len(films)} films")
        final_path = archive_path(run.id)
        os.replace(upload_path, final_path)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        upload_path.unlink(missing_ok=True)
        if final_path is not None:
            final_path.unlink(missing_ok=True)
        raise
    try:
        tasks.start(run.id)
    except Exception as exc:  # the queue is down: the run stays queued and recovery enqueues it later
        log_not_queued(log, exc, "validation run %d could not be queued now; recovery will queue it", run.id)
    return run


def cancel(run_id: int, user: User) -> bool:
    """Stop a queued or running run (False if it had already ended): it ends as failed, "cancelled by
    <user>", and its archive is removed. The lease is cleared in the same statement, so a job working
    on the run fails its next renewal (leases.update_held) and stops, writing nothing more; a job
    still queued for it finds it ended and returns."""
    ended = db.session.execute(
        update(ValidationRun)
        .where(ValidationRun.id == run_id, ValidationRun.status.in_((RUN_QUEUED, RUN_RUNNING)))
        .values(**tasks.ended_unfinished(f"Cancelled by {user.username}."))
        .execution_options(synchronize_session=False)
    )
    if ended.rowcount != 1:
        db.session.rollback()
        return False
    record_audit(user.username, "validation.cancel", f"validation run {run_id}", "")
    db.session.commit()
    archive_path(run_id).unlink(missing_ok=True)
    return True


def _save(upload: FileStorage, path, max_bytes: int) -> str:
    digest, size = hashlib.sha256(), 0
    with open_private(path) as out:
        while chunk := upload.stream.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise too_large()
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def progress(run: ValidationRun) -> dict[str, int]:
    """Films processed (answered or refused) out of all films of the run, counted from the items."""
    counts = dict(
        db.session.execute(
            select(ValidationItem.state, func.count())
            .where(ValidationItem.run_id == run.id)
            .group_by(ValidationItem.state)
        ).all()
    )
    pending, processed = counts.get(ITEM_PENDING, 0), sum(counts.values()) - counts.get(ITEM_PENDING, 0)
    return {"done": processed, "total": pending + processed}
