import csv
import io

from flask import Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from ..admin.export import csv_cell
from ..extensions import db
from ..inference.decide import threshold_text
from ..inference.model_card import ModelCardError, read_card
from ..inference.overlay import stored_overlay_png
from ..models import AuditEvent, SiteCalibration, ValidationItem, ValidationRun, record_audit
from ..multipart import answered_by_the_page, unreadable, why_unreadable
from ..params import row_by_id
from ..refusal import Refusal
from ..responses import form_accepted, form_errors
from ..site_threshold import active_calibration
from . import bp
from .archive import ArchiveRejected
from .charts import reliability_svg, roc_svg
from .deletion import DeletionRefused, delete_run, deletion_problem
from .forms import AdoptThresholdForm, CancelRunForm, DeleteRunForm, RedactRunForm, UploadArchiveForm, WithdrawForm
from .metrics import MIN_FILMS_PER_CLASS_FOR_INTERVAL
from .monitoring import DEFAULT_WEEKS, MAX_WEEKS, drift_alert, weekly
from .redaction import RedactionRefused, redact_run, redaction_problem
from .report import SHORTFALL_FLAGGED, points_with_intervals
from .runs import cancel, create_run, progress, record_report_viewed, too_large, upload_limit
from .site import (
    AdoptionRefused,
    adopt,
    adoption_problem,
    current_model_version,
    threshold_problem,
    uncertainty_band,
    withdraw,
)

CSV_COLUMNS = [
    "entry",
    "truth",
    "state",
    "label",
    "p_pneumonia",
    "chest_probability",
    "feature_distance",
    "unknown_reason",
    "refusal",
    "sha256",
    "image_format",
]


def _run_or_404(run_id: int) -> ValidationRun:
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        abort(404)
    return run


def _run_of_form(run_id: int) -> ValidationRun:
    """The run a form of its report page was sent for. One deleted since (this form sent again from
    the back button or by a double-click, or another administrator's delete) answered the bare 404
    page, as if the link were wrong: the validation page now says what happened to it."""
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        who = _deleted_by(run_id)
        if who is None:
            flash(f"There is no validation run {run_id} (any longer); nothing was done.", "info")
        else:
            flash(f"Validation run {run_id} was already deleted (by {who}); nothing was done.", "info")
        abort(redirect(url_for("validation.index"), code=303))
    return run


def _deleted_by(run_id: int) -> str | None:
    """Who deleted validation run `run_id` ("you" for the one asking), from the trail; None if no one did."""
    by = db.session.scalar(
        select(AuditEvent.actor)
        .where(AuditEvent.action == "validation.delete", AuditEvent.target == f"validation run {run_id}")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return "you" if by is not None and by == current_user.username else by


def _index_page(form, status=200):
    runs = db.session.scalars(select(ValidationRun).order_by(ValidationRun.id.desc()).limit(100)).all()
    try:
        calibration = active_calibration(current_model_version())
    except AdoptionRefused:
        calibration = None
    calibrations = db.session.scalars(select(SiteCalibration).order_by(SiteCalibration.id.desc()).limit(20)).all()
    return render_template(
        "validation/index.html",
        form=form,
        runs=runs,
        progress={run.id: progress(run) for run in runs},
        calibration=calibration,
        calibrations=calibrations,
        withdraw_form=WithdrawForm(),
        max_files=current_app.config["VALIDATION_MAX_FILES"],
        max_mb=current_app.config["VALIDATION_MAX_BYTES"] / 1e6,
    ), status


# The model card's official-test figures the report sets beside the run's.
CARD_FIGURES = ("n", "unknown_rate", "auc", "sensitivity", "specificity", "ece")


@bp.route("/", methods=["GET", "POST"])
def index():
    if request.method == "GET":
        return _index_page(UploadArchiveForm())
    request.max_content_length = upload_limit()
    try:
        if unreadable(request):  # its CSRF token sent in a header instead (X-CSRFToken), as scripts may
            return _unreadable_archive()
        form = UploadArchiveForm()
        valid = form.validate_on_submit()
    except RequestEntityTooLarge:
        flash(too_large().message, "error")
        return _index_page(UploadArchiveForm(formdata=None), 413)
    if not valid:
        flash(form_errors(form), "error")
        return _index_page(form, 400)
    try:
        run = create_run(current_user, form.archive.data)
    except ArchiveRejected as exc:
        flash(exc.message, "error")
        return _index_page(form, exc.status)
    return redirect(url_for("validation.report", run_id=run.id), code=303)


def _unreadable_archive():
    """The validation page's words for a multipart body werkzeug could not read (multipart.py)."""
    flash(f"No archive could be read from this upload, so no run was started: {why_unreadable(request)}.", "error")
    return _index_page(UploadArchiveForm(formdata=None), 400)


@bp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError):
    """The CSRF token is read from the body before the view runs: in a body werkzeug could not read
    it is missing too, and the page said the form had expired, which it had not. This blueprint's
    admins-only check has not run yet either: it is made here."""
    if request.endpoint == "validation.index" and answered_by_the_page(request) and current_user.is_admin:
        return _unreadable_archive()
    # Imported here: errors.handlers imports security, which imports the API, which imports this module.
    from ..errors.handlers import handle_csrf

    return handle_csrf(exc)


@bp.route("/<int:run_id>")
def report(run_id: int):
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        # A stale link (the validation page open while another administrator deleted the run, a bookmark):
        # the bare 404 page read as a wrong address. One that never named a run stays a 404.
        who = _deleted_by(run_id) or abort(404)
        flash(f"Validation run {run_id} was deleted (by {who}), with its report.", "info")
        return redirect(url_for("validation.index"), code=303)
    record_report_viewed(run, current_user.username, "report page")
    metrics = run.metrics or {}
    worst = []
    if metrics.get("worst_errors"):
        found = db.session.scalars(select(ValidationItem).where(ValidationItem.id.in_(metrics["worst_errors"])))
        by_id = {item.id: item for item in found}
        worst = [by_id[i] for i in metrics["worst_errors"] if i in by_id]
    try:
        card = read_card(current_app.config["MODEL_PATH"], verify=False)
    except ModelCardError:
        card = {}
    # The card beside the weights is the model this server runs now: beside a run of another version its
    # figures would be another model's, so the column then stays empty and the page says why.
    served_version = card.get("version")
    if run.model_version and served_version != run.model_version:
        card = {}
    # Every figure the page shows, None when absent: a card written by training.train has no test
    # figures until training.evaluate --update-card, and the page then failed (500) on every run.
    test_figures = card.get("metrics", {}).get("test", {})
    card_figures = {key: test_figures.get(key) for key in CARD_FIGURES}
    points = points_with_intervals(metrics) if metrics else []
    adopt_problem, point_problems = adoption_problem(run), {}
    if adopt_problem is None:
        try:  # a proposal at a threshold no site may adopt gets no Adopt button that would always refuse
            band = uncertainty_band()
            refusals = ((p["name"], threshold_problem(p["threshold"], band)) for p in points if p["name"] != "in force")
            point_problems = {name: refused.message for name, refused in refusals if refused}
        except AdoptionRefused as exc:
            adopt_problem = exc
    return render_template(
        "validation/report.html",
        run=run,
        m=metrics,
        progress=progress(run),
        card=card_figures,
        # The card's figures are at its own threshold; a run at a site threshold is at another.
        card_threshold=card.get("threshold"),
        served_version=served_version,
        worst=worst,
        points=points,
        shortfall_flagged=SHORTFALL_FLAGGED,
        # One class only: the points would draw a flat line along an axis, a curve that means nothing.
        roc=roc_svg(metrics["roc"], metrics["operating_points"]) if metrics and metrics["auc"] is not None else "",
        reliability=reliability_svg(metrics["reliability"]) if metrics else "",
        adopt_form=AdoptThresholdForm(),
        adopt_problem=adopt_problem,
        point_problems=point_problems,
        cancel_form=CancelRunForm(),
        delete_form=DeleteRunForm(),
        delete_problem=deletion_problem(run),
        redact_form=RedactRunForm(),
        redact_problem=redaction_problem(run),
        interval_min_films=MIN_FILMS_PER_CLASS_FOR_INTERVAL,
    )


@bp.route("/<int:run_id>/films.csv")
def films_csv(run_id: int):
    run = _run_or_404(run_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    items = db.session.execute(
        select(*(getattr(ValidationItem, c) for c in CSV_COLUMNS))
        .where(ValidationItem.run_id == run.id)
        .order_by(ValidationItem.id)
    )
    rows = [[csv_cell(value) for value in row] for row in items]
    writer.writerows(rows)
    record_audit(current_user.username, "export", f"CSV, {len(rows)} rows", f"validation run {run.id} films")
    db.session.commit()
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=validation-run-{run.id}.csv"},
    )


def _item(run_id: int, item_id: int, what: str) -> ValidationItem:
    """A validation film, its look in the audit trail: these are patients' films like any upload's."""
    item = row_by_id(ValidationItem, item_id)
    if item is None or item.run_id != run_id or item.review_png is None:
        abort(404)
    record_audit(current_user.username, "prediction_viewed", f"validation run {run_id} film {item_id}", what)
    db.session.commit()
    return item


@bp.route("/<int:run_id>/films/<int:item_id>/image.png")
def film_image(run_id: int, item_id: int):
    return Response(_item(run_id, item_id, "image").review_png, mimetype="image/png")


@bp.route("/<int:run_id>/films/<int:item_id>/heatmap.png")
def film_heatmap(run_id: int, item_id: int):
    item = _item(run_id, item_id, "heat map")
    return Response(stored_overlay_png(item.review_png, item.heatmap_png), mimetype="image/png")


@bp.route("/<int:run_id>/adopt", methods=["POST"])
def adopt_threshold(run_id: int):
    run = _run_of_form(run_id)
    form = AdoptThresholdForm()
    if form_accepted(form, "The threshold was not adopted"):
        already = (
            f"Site threshold {form.threshold.data:.3f} from this run is already in force, adopted by you for this "
            "reason (the form was sent twice?); nothing was changed."
        )
        if _adopted_by_this_form(run, form):
            flash(already, "info")
            return redirect(url_for("validation.report", run_id=run.id), code=303)
        try:  # adopt() refuses an unfinished run, a small one, another model version, a bad threshold
            calibration = adopt(run, form.threshold.data, form.reason.data, current_user)
        except AdoptionRefused as exc:
            # A double-click's other request, saved a moment before this one, is "adopted meanwhile".
            db.session.rollback()
            if _adopted_by_this_form(run, form):
                flash(already, "info")
            else:
                flash(exc.message, "error")
        else:
            threshold = threshold_text(calibration.threshold)
            flash(f"Site threshold {threshold} is now in force for new predictions.", "info")
    return redirect(url_for("validation.report", run_id=run.id), code=303)


def _adopted_by_this_form(run: ValidationRun, form: AdoptThresholdForm) -> bool:
    """Whether the threshold in force is the one this very form adopted: a double-click's other POST
    (or the form re-sent from the back button) withdrew it and adopted it again, two rows in the site
    threshold history and the trail for one decision, or, at the same moment, was refused "Another site
    threshold was adopted ..." as the answer the browser shows."""
    in_force = active_calibration(run.model_version or "")
    return (
        in_force is not None
        and in_force.validation_run_id == run.id
        and in_force.threshold == form.threshold.data
        and in_force.reason == form.reason.data
        and in_force.adopted_by_id == current_user.id
    )


@bp.route("/<int:run_id>/cancel", methods=["POST"])
def cancel_run(run_id: int):
    run = _run_of_form(run_id)
    if CancelRunForm().validate_on_submit():
        if cancel(run.id, current_user):
            flash(f"Validation run {run.id} was cancelled; its archive is removed.", "info")
        else:
            flash(f"Validation run {run.id} had already ended ({run.status}); nothing was cancelled.", "error")
    return redirect(url_for("validation.report", run_id=run.id), code=303)


@bp.route("/<int:run_id>/delete", methods=["POST"])
def delete(run_id: int):
    run = _run_of_form(run_id)
    if not form_accepted(DeleteRunForm(), f"Validation run {run.id} was not deleted"):
        return redirect(url_for("validation.report", run_id=run.id), code=303)
    try:
        films = delete_run(run.id, current_user.username)
    except DeletionRefused as exc:
        return _refused(exc, run.id)
    flash(f"Validation run {run_id} was deleted with its {films} films' names, review copies and figures.", "info")
    return redirect(url_for("validation.index"), code=303)


@bp.route("/<int:run_id>/redact", methods=["POST"])
def redact(run_id: int):
    run = _run_of_form(run_id)
    if form_accepted(RedactRunForm(), f"The films of validation run {run.id} were not redacted"):
        try:
            films = redact_run(run.id, current_user.username)
        except RedactionRefused as exc:
            return _refused(exc, run.id)
        done = f"The names, review copies and heat maps of {films} films were removed; the figures stay."
        flash(done if films else f"Validation run {run.id} had no names or pictures left to remove.", "info")
    return redirect(url_for("validation.report", run_id=run.id), code=303)


def _refused(exc: Refusal, run_id: int):
    """Back to the run's report with the reason, or to the list when the run is gone (deleted by another
    administrator meanwhile)."""
    flash(exc.message, "error")
    if exc.status == 404:
        return redirect(url_for("validation.index"), code=303)
    return redirect(url_for("validation.report", run_id=run_id), code=303)


@bp.route("/calibration/withdraw", methods=["POST"])
def withdraw_threshold():
    form = WithdrawForm()
    if form.validate_on_submit():
        try:
            withdrawn = withdraw(current_user)
        except AdoptionRefused as exc:
            flash(exc.message, "error")
        else:
            # Not withdrawn: also the answer to a double-click's second POST, the one the browser shows,
            # where "No site threshold was in force." read as if the withdrawal just made had not been needed.
            done = "Site threshold withdrawn" if withdrawn else "No site threshold is in force (already withdrawn)"
            flash(f"{done}: new predictions use the model card's threshold.", "info")
    return redirect(url_for("validation.index"), code=303)


def _monitoring_figures() -> dict:
    try:
        version = current_model_version()
    except AdoptionRefused as exc:
        # Said as it is: a bare 503 read "temporarily unable ... maintenance downtime or capacity problems".
        abort(503, exc.message)
    weeks = min(max(request.args.get("weeks", DEFAULT_WEEKS, type=int), 1), MAX_WEEKS)
    return weekly(version, weeks=weeks)


@bp.route("/monitoring")
def monitoring():
    return render_template("validation/monitoring.html", m=_monitoring_figures())


@bp.route("/monitoring.json")
def monitoring_json():
    return jsonify(_monitoring_figures())


@bp.app_context_processor
def drift_banner():
    """Admins see a banner on every page while this week's or last week's scores drift past the level."""
    if not (current_user.is_authenticated and current_user.is_admin):
        return {}
    try:
        return {"drift_alert": drift_alert(current_model_version())}
    except AdoptionRefused:
        return {}
