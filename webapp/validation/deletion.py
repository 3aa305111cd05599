"""Deleting a validation run: the run, its films' rows (each member's name as it was in the archive,
often a patient's name; review copies, heat maps, scores), its figures and any archive left for it.

The names are what the site needs while it reviews the report (to find the misclassified films in
its own archive), so nothing is blanked during the review; an administrator deletes the run when
the review is over, on its report page, with `flask --app wsgi validation delete RUN_ID` or with
DELETE /api/v1/validation-runs/<id>. The rows go in one transaction with the audit event, so a
failure leaves the run whole; the archive file goes after the commit (one left by a crash there is
removed by the job worker's sweep, storage.remove_orphans, as for any run that has ended).

Refused, leaving everything as it was:
- a run still queued or running: a job may be writing its films at that moment; cancelling it
  first (one click, audited) stops that job, and the run's end is then on record before it goes;
- a run a site threshold was adopted from (in force or withdrawn): predictions name that threshold
  (site_calibration_id), and the threshold names the run as its evidence.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import SiteCalibration, ValidationItem, ValidationRun, record_audit
from ..refusal import Refusal
from .ended import ENDED, ended_run, still_working
from .storage import archive_path

log = logging.getLogger(__name__)


class DeletionRefused(Refusal):
    """A validation run that cannot be deleted (now, or at all)."""


def deletion_problem(run: ValidationRun) -> DeletionRefused | None:
    """Why `run` cannot be deleted, or None: the one rule for the page's button and every caller."""
    working = still_working(run, DeletionRefused, "cancel it first, then delete it.")
    if working:
        return working
    if _adopted(run.id):
        return DeletionRefused(
            "run_adopted",
            f"A site threshold was adopted from validation run {run.id}: the run is kept as the evidence "
            "for that threshold and for the predictions made under it.",
            409,
        )
    return None


def delete_run(run_id: int, actor: str) -> int:
    """Delete the ended run `run_id` and everything kept for it, audited as `actor`; returns how many
    films it had. Raises DeletionRefused (404 for no such run, 409 otherwise) having deleted nothing."""
    ended_run(run_id, DeletionRefused, deletion_problem)
    gone = 0
    try:
        films = db.session.execute(
            delete(ValidationItem).where(ValidationItem.run_id == run_id).execution_options(synchronize_session=False)
        ).rowcount
        # The checks again, in the statement that deletes: a run cannot start again once ended, but a
        # threshold may have been adopted from it since it was read (SQLite enforces no foreign key).
        gone = db.session.execute(
            delete(ValidationRun)
            .where(ValidationRun.id == run_id, ValidationRun.status.in_(ENDED), ~_adopted_clause(run_id))
            .execution_options(synchronize_session=False)
        ).rowcount
        if gone == 1:
            record_audit(actor, "validation.delete", f"validation run {run_id}", f"{films} films")
            db.session.commit()
    except IntegrityError:  # a threshold adopted from it meanwhile (PostgreSQL's foreign key)
        gone = 0
    except BaseException:
        db.session.rollback()
        raise
    if gone != 1:
        db.session.rollback()
        raise _refusal_now(run_id)
    try:
        archive_path(run_id).unlink(missing_ok=True)
    except OSError:  # the run is deleted all the same; the job worker's sweep retries the file
        log.exception("validation run %d deleted, but its archive could not be removed now", run_id)
    return films


def _refusal_now(run_id: int) -> DeletionRefused:
    """Why a run that passed the checks was not deleted after all: it changed in the meantime."""
    db.session.expire_all()
    run = db.session.get(ValidationRun, run_id)
    if run is None:  # deleted by another administrator at the same moment
        return DeletionRefused("not_found", f"No validation run {run_id}.", 404)
    problem = deletion_problem(run)
    if problem is None:  # no other change can stop the delete; a bug if it does
        raise RuntimeError(f"validation run {run_id} was not deleted, for no known reason")
    return problem


def _adopted_clause(run_id: int):
    return exists(select(SiteCalibration.id).where(SiteCalibration.validation_run_id == run_id))


def _adopted(run_id: int) -> bool:
    return bool(db.session.scalar(select(_adopted_clause(run_id))))
