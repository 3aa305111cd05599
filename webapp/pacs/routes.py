"""The clinicians' worklist of films from the PACS, and the administrators' outbox of results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..inference.labels import NORMAL, PNEUMONIA, UNKNOWN
from ..models import (
    RECEIPT_REFUSED,
    RECEIPT_STATES,
    RESULT_SENT,
    RESULT_STATES,
    RESULT_UNDELIVERED,
    SOURCE_DICOM,
    DicomReceipt,
    DicomResult,
    Prediction,
    WorklistRead,
    record_audit,
    utcnow,
)
from ..pruned_meanwhile import FILM_PRUNED, film_kept
from ..security import navigated_from_this_site
from . import bp
from .tasks import discard, requeue

# The worklist's order: likely pneumonia first (most likely on top), then films the model cannot read.
_TRIAGE = case({PNEUMONIA: 0, UNKNOWN: 1, NORMAL: 2}, value=Prediction.label, else_=3)
WORKLIST_REFRESH_SECONDS = 30
OUTBOX_PAGE_SIZE = 100


def require_admin() -> None:
    if not current_user.is_admin:
        abort(403)


@bp.route("/worklist")
def worklist():
    hours = current_app.config["WORKLIST_HOURS"]
    read = (
        select(WorklistRead.id)
        .where(WorklistRead.prediction_id == Prediction.id, WorklistRead.user_id == current_user.id)
        .exists()
    )
    rows = db.session.execute(
        select(Prediction, read.label("read"))
        .where(Prediction.source == SOURCE_DICOM, Prediction.created_at >= utcnow() - timedelta(hours=hours))
        .order_by(_TRIAGE, Prediction.p_pneumonia.desc(), Prediction.created_at.desc(), Prediction.id.desc())
    ).all()
    return render_template(
        "pacs/worklist.html",
        rows=rows,
        hours=hours,
        unread=sum(1 for _, was_read in rows if not was_read),
        refresh_seconds=WORKLIST_REFRESH_SECONDS,
    )


@bp.route("/worklist/<int:prediction_id>")
def open_film(prediction_id: int):
    """Mark the film read for this user, then show the usual result page (verdict, heat map, feedback).
    Only the reader's own click marks it: another site sending their browser here must not empty the
    worklist's unread marks (the film still opens)."""
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or prediction.source != SOURCE_DICOM:
        abort(404)
    if not navigated_from_this_site():
        return redirect(url_for("screening.detail", prediction_id=prediction_id))
    db.session.add(WorklistRead(user_id=current_user.id, prediction_id=prediction_id))
    try:
        kept = film_kept(prediction_id)
    except IntegrityError:
        db.session.rollback()  # read before (or, on PostgreSQL, the film pruned meanwhile: asked below)
        kept = film_kept(prediction_id)
    else:
        if kept:
            db.session.commit()
        else:
            db.session.rollback()
    if not kept:
        abort(410, FILM_PRUNED)
    return redirect(url_for("screening.detail", prediction_id=prediction_id))


@bp.route("/admin/dicom/outbox")
def outbox():
    require_admin()
    results = db.session.scalars(
        select(DicomResult).order_by(DicomResult.created_at.desc(), DicomResult.id.desc()).limit(OUTBOX_PAGE_SIZE)
    ).all()
    result_counts = dict(db.session.execute(select(DicomResult.state, func.count()).group_by(DicomResult.state)).all())
    receipt_counts = dict(
        db.session.execute(select(DicomReceipt.state, func.count()).group_by(DicomReceipt.state)).all()
    )
    copies = db.session.scalar(select(func.coalesce(func.sum(DicomReceipt.copies - 1), 0)))
    # A refused film has no prediction and no result: without its reason here, the only trace of it
    # the administrator had was a count (the reason was in the worker's log alone).
    refused = db.session.scalars(
        select(DicomReceipt)
        .where(DicomReceipt.state == RECEIPT_REFUSED)
        .order_by(DicomReceipt.received_at.desc(), DicomReceipt.id.desc())
        .limit(OUTBOX_PAGE_SIZE)
    ).all()
    return render_template(
        "pacs/outbox.html",
        results=results,
        result_counts={state: result_counts.get(state, 0) for state in RESULT_STATES},
        receipt_counts={state: receipt_counts.get(state, 0) for state in RECEIPT_STATES},
        duplicates=copies,
        refused=refused,
        destination=current_app.config.get("DICOM_RESULTS_DESTINATION"),
        form=FlaskForm(),
        undelivered=RESULT_UNDELIVERED,
    )


ALREADY_ACTED = (
    "Result {id} was already retried or discarded (this button pressed twice, or by another administrator); "
    "nothing was changed. Its state is now {state}."
)


def _act_on_failed_result(result_id: int, action: str, act: Callable[[DicomResult], bool], message: str):
    """An administrator's retry or discard of a result whose delivery failed or was refused, audited."""
    require_admin()
    if not FlaskForm().validate_on_submit():
        abort(400)
    result = db.get_or_404(DicomResult, result_id)
    # Acted on already, before this request (a double-click's second POST, the form sent again from the
    # back button: the outbox answered with werkzeug's bare 409 page) or while it ran (the act wrote
    # nothing): the same answer, back on the outbox.
    if result.state in RESULT_UNDELIVERED and result.file_name:
        record_audit(current_user.username, action, f"result {result_id}")
        if act(result):
            flash(message, "success")
            return redirect(url_for("pacs.outbox"))
        db.session.rollback()
        db.session.refresh(result)
    flash(ALREADY_ACTED.format(id=result_id, state=_state_in_words(result)), "error")
    return redirect(url_for("pacs.outbox"))


def _state_in_words(result: DicomResult) -> str:
    return f"{result.state}, discarded" if not result.file_name and result.state != RESULT_SENT else result.state


@bp.route("/admin/dicom/outbox/<int:result_id>/retry", methods=["POST"])
def retry(result_id: int):
    message = f"Result {result_id} will be sent again now."
    return _act_on_failed_result(result_id, "dicom.result_retry", requeue, message)


@bp.route("/admin/dicom/outbox/<int:result_id>/discard", methods=["POST"])
def discard_result(result_id: int):
    message = f"Result {result_id} was discarded; it will not reach the PACS."
    return _act_on_failed_result(result_id, "dicom.result_discard", discard, message)
