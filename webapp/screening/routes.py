from flask import Response, abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from ..extensions import db
from ..filenames import sent_filename
from ..inference.overlay import layer_png, legend_png, stored_overlay_png
from ..models import Feedback, Prediction, PredictionImages, record_audit, utcnow
from ..multipart import answered_by_the_page, unreadable, why_unreadable
from ..notes import INTENDED_USE, NOTES
from ..params import int_args
from ..pruned_meanwhile import FILM_PRUNED, film_kept
from ..ratelimits import upload_per_user
from ..responses import form_accepted, form_errors, is_local_path, local_url, wants_json
from . import bp, review_copy
from .batch import reading_order, summarise
from .forms import ACCEPTED_EXTENSIONS, FeedbackForm, UploadForm
from .service import UploadRejected, screen_batch, screening_unavailable

# A film's link followed after the film was pruned (a history page drawn before, a bookmark) answered
# "There is nothing at this address.", read as a wrong address: the page now says the likely reason.
FILM_NOT_KEPT = (
    "There is no film {id} (any longer): films are deleted past the site's retention period for screening "
    "results (flask predictions prune), and a link from before that leads nowhere."
)


def visible_prediction(prediction_id: int) -> Prediction:
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        abort(404, FILM_NOT_KEPT.format(id=prediction_id))
    if not prediction.visible_to(current_user):
        # Someone else's patient: a refused look is in the trail too, or probing would leave no trace.
        record_audit(current_user.username, "prediction_view_refused", f"prediction {prediction.id}", request.endpoint)
        db.session.commit()
        abort(403)
    return prediction


def viewed(prediction: Prediction, what: str) -> Prediction:
    """Every look at a patient's film is in the audit trail: who, when, from where, which view."""
    record_audit(current_user.username, "prediction_viewed", f"prediction {prediction.id}", what)
    db.session.commit()
    return prediction


def _upload_page(form, errors, status):
    return render_template(
        "screening/upload.html",
        form=form,
        errors=errors,
        accepted=ACCEPTED_EXTENSIONS.replace(",", ", "),
        max_mb=current_app.config["MAX_UPLOAD_MB"],
        max_files=current_app.config["MAX_FILES_PER_UPLOAD"],
        intended_use=INTENDED_USE,
        unavailable=screening_unavailable(),
    ), status


@bp.route("/")
def index():
    return redirect(url_for("screening.upload"))


@bp.route("/screen", methods=["GET", "POST"])
@upload_per_user
def upload():
    form = UploadForm()
    if request.method == "GET":
        return _upload_page(form, [], 200)
    if unreadable(request):  # its CSRF token sent in a header instead (X-CSRFToken), as scripts may
        return _unreadable_upload()
    if not form.validate_on_submit():
        return _refused(form, [{"filename": "", "message": form_errors(form)}], 400)
    try:
        outcomes = screen_batch(
            current_user, ((sent_filename(f), f.read()) for f in form.files.data if f and f.filename)
        )
    except UploadRejected as exc:
        return _refused(form, [{"filename": "", "message": exc.message, "code": exc.code}], exc.status)
    ids = [o.prediction.id for o in outcomes if o.prediction]
    errors = [
        {"filename": o.filename, "message": o.rejection.message, "code": o.rejection.code}
        for o in outcomes
        if o.rejection
    ]
    if not ids:
        return _refused(form, errors, max((o.rejection.status for o in outcomes), default=400))
    for error in errors:
        flash(f"{error['filename']}: {error['message']}", "error")
    if not current_app.config["STORE_ORIGINAL_FILENAMES"]:
        # Shown once on the results page that follows, then dropped: kept in this browser's
        # session cookie only, never in the database. Shortened to keep the cookie small.
        session["sent_names"] = {str(o.prediction.id): o.filename[:80] for o in outcomes if o.prediction}
    target = url_for("screening.results", id=ids)
    return jsonify(redirect=target) if wants_json() else redirect(target, code=303)


def _unreadable_upload():
    """The upload page's words for a multipart body werkzeug could not read (multipart.py)."""
    message = f"No file could be read from this upload, so nothing was screened: {why_unreadable(request)}."
    error = {"filename": "", "message": message, "code": "no_file"}
    return _refused(UploadForm(formdata=None), [error], 400)


@bp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError):
    """The CSRF token is read from the body before the view runs: in a body werkzeug could not read
    it is missing too, and the page said the form had expired, which it had not."""
    if request.endpoint == "screening.upload" and answered_by_the_page(request):
        return _unreadable_upload()
    # Imported here: errors.handlers imports security, which imports the API, which imports this module.
    from ..errors.handlers import handle_csrf

    return handle_csrf(exc)


def _refused(form, errors, status):
    if wants_json():
        return jsonify(errors=errors), status
    return _upload_page(form, errors, status)


@bp.route("/screen/results")
def results():
    # A repeated id (an edited address) would draw its card twice, with the same element ids.
    ids = list(dict.fromkeys(int_args("id")))[: current_app.config["MAX_FILES_PER_UPLOAD"]]
    if not ids:
        return redirect(url_for("screening.upload"))
    # One query for the films and one for their readings, held here: the session keeps rows only while
    # something refers to them, so a look-up that dropped its row read it again in visible_prediction,
    # and each card's reading was another query (3 a film before 5 December).
    kept = {p.id: p for p in db.session.scalars(_films_with_readings(ids))}
    predictions = [visible_prediction(i) for i in ids if i in kept]
    gone = [i for i in ids if i not in kept]
    if gone:
        # Pruned since the upload (the page reloaded, or the answer to a reading of one of them): a 404
        # for the whole page hid the films still kept, the reader not told why.
        flash(_no_longer_kept(gone), "info")
        if not predictions:
            return redirect(url_for("history.mine"), 303)
    for prediction in predictions:
        record_audit(current_user.username, "prediction_viewed", f"prediction {prediction.id}", "results page")
    db.session.commit()
    order = "upload" if request.args.get("order") == "upload" else "verdict"
    return render_template(
        "screening/results.html",
        predictions=predictions if order == "upload" else reading_order(predictions),
        summary=summarise(predictions),
        order=order,
        ids=ids,
        sent_names=session.pop("sent_names", {}),
        notes=NOTES,
        intended_use=INTENDED_USE,
        feedback_form=FeedbackForm,
    )


def _films_with_readings(ids: list[int]):
    return select(Prediction).where(Prediction.id.in_(ids)).options(selectinload(Prediction.feedback))


def _no_longer_kept(films: list[int]) -> str:
    named = (
        f"Films {', '.join(map(str, films))} of this page are" if len(films) > 1 else f"Film {films[0]} of this page is"
    )
    return (
        f"{named} no longer kept: films are deleted past the site's retention period for screening results "
        "(flask predictions prune)."
    )


@bp.route("/predictions/<int:prediction_id>")
def detail(prediction_id: int):
    prediction = viewed(visible_prediction(prediction_id), "detail page")
    return render_template(
        "screening/detail.html",
        prediction=prediction,
        notes=NOTES,
        intended_use=INTENDED_USE,
        feedback_form=FeedbackForm,
    )


@bp.route("/predictions/<int:prediction_id>/print")
def print_view(prediction_id: int):
    return render_template(
        "screening/print.html",
        p=viewed(visible_prediction(prediction_id), "print view"),
        notes=NOTES,
        intended_use=INTENDED_USE,
        printed_at=utcnow(),
    )


def _png(data: bytes) -> Response:
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, no-store"})


def reviewable_prediction(prediction_id: int) -> Prediction:
    """The prediction, once this process has made its full-size review copy if it was still making it."""
    prediction = visible_prediction(prediction_id)
    review_copy.wait_for(prediction.id)
    return prediction


def stored_images(prediction: Prediction, *columns) -> tuple[bytes, ...]:
    """The film's stored images that the route shows, in one SELECT, as they are now (a review copy made
    after the answer included). Through the relationship an image route read the row's heat map and
    then, in a second SELECT, its deferred review copy, whichever of the two it served."""
    found = db.session.execute(select(*columns).where(PredictionImages.prediction_id == prediction.id)).first()
    if found is None:  # pruned since visible_prediction found it
        abort(404, FILM_NOT_KEPT.format(id=prediction.id))
    return tuple(found)


@bp.route("/predictions/<int:prediction_id>/image.png")
def image(prediction_id: int):
    prediction = viewed(reviewable_prediction(prediction_id), "image")
    return _png(*stored_images(prediction, PredictionImages.review_png))


@bp.route("/predictions/<int:prediction_id>/heatmap.png")
def heatmap(prediction_id: int):
    prediction = viewed(reviewable_prediction(prediction_id), "heat map")
    return _png(
        stored_overlay_png(*stored_images(prediction, PredictionImages.review_png, PredictionImages.heatmap_png))
    )


@bp.route("/predictions/<int:prediction_id>/heatmap-layer.png")
def heatmap_layer(prediction_id: int):
    prediction = viewed(visible_prediction(prediction_id), "heat map layer")
    return _png(layer_png(*stored_images(prediction, PredictionImages.heatmap_png)))


@bp.route("/heatmap-key.png")
def heatmap_key():
    return _png(legend_png())


@bp.route("/predictions/<int:prediction_id>/feedback", methods=["POST"])
def feedback(prediction_id: int):
    if db.session.get(Prediction, prediction_id) is None:
        return _film_gone()
    prediction = visible_prediction(prediction_id)
    form = FeedbackForm()
    if not form_accepted(form, "The review was not saved"):
        return redirect(url_for("screening.detail", prediction_id=prediction.id)), 303
    label, comment = form.label.data, (form.comment.data or "").strip()
    try:
        saved = _save_reading(prediction, label, comment)
    except (IntegrityError, StaleDataError):
        # The film's first reading saved twice at once (a double-click, two readers of a PACS film):
        # the other request's row is in now, so this one replaces it as any later save would. Or the
        # film was pruned meanwhile: PostgreSQL's key check waited for the prune, then failed (an
        # INSERT), or the reading being replaced went with it (an UPDATE of no row).
        db.session.rollback()
        saved = film_kept(prediction_id) and _save_reading(prediction, label, comment)
    if not saved:
        return _film_gone()
    flash("Review saved. Thank you: reviews are how we measure the model.", "info")
    back = request.form.get("back", "")
    # Back to this film's saved reading (review_anchor), not to the top of a batch the reader is working through.
    if _is_results_path(back):
        return redirect(f"{local_url(back)}#{review_anchor(prediction.id)}", 303)
    return redirect(url_for("screening.detail", prediction_id=prediction.id, _anchor=review_anchor(prediction.id)), 303)


def _film_gone():
    """A reading sent for a film pruned since its page was drawn, or while it was being saved: back to the
    results page it came from (which says which of its films are gone), else the reader's history, with
    what happened. It answered the bare 404 page, or a 410 page that left the reader nowhere."""
    flash(FILM_PRUNED, "error")
    back = request.form.get("back", "")
    return redirect(local_url(back) if _is_results_path(back) else url_for("history.mine"), 303)


@bp.app_template_global()
def review_anchor(prediction_id: int) -> str:
    """The id of a card's saved-reading line (_result_card.html), which takes the focus after a save."""
    return f"review-{prediction_id}"


def _save_reading(prediction: Prediction, label: str, comment: str) -> bool:
    """Save the reading and commit; False, saving nothing, when the film was deleted meanwhile."""
    review = prediction.feedback or Feedback(prediction=prediction)
    # Replacing another reader's reading (a PACS film has several possible readers) keeps the
    # earlier reading in the trail: who read it and what they said (the comment's text stays out).
    replaced = (
        f", replacing {review.label} by {review.user.username}" if review.user_id not in (None, current_user.id) else ""
    )
    review.user_id = current_user.id
    review.label = label
    review.comment = comment
    db.session.add(review)
    if replaced or (current_user.is_admin and prediction.user_id != current_user.id):
        record_audit(current_user.username, "feedback.save", f"prediction {prediction.id}", review.label + replaced)
    if not film_kept(prediction.id):
        db.session.rollback()
        return False
    db.session.commit()
    return True


def _is_results_path(target: str) -> bool:
    """Only our own results page, and nothing a Location header could be split or redirected by."""
    return target.startswith("/screen/results") and is_local_path(target)
