from flask import g, jsonify, request, url_for

from ..access import revoke_token
from ..audit_log import AuditFilterForm, event_json, filtered_events
from ..extensions import db
from ..history.filters import HistoryFilterForm, filtered_predictions
from ..models import ApiToken, Prediction, record_audit
from ..params import MAX_PAGE, int_arg
from ..ratelimits import upload_per_token, upload_per_user
from ..responses import form_errors
from ..screening.service import UploadRejected, screen_batch
from . import bp
from .auth import token_required
from .errors import api_error
from .openapi import openapi_document
from .serializers import prediction_json, token_json


@bp.route("/predictions", methods=["POST"])
@upload_per_user
@upload_per_token
@token_required
def create_predictions():
    files = request.files.getlist("file")
    if not files:
        return api_error("no_file", "Send one or more files in multipart form fields named 'file'.", 400)
    try:
        outcomes = screen_batch(g.api_user, ((f.filename, f.read()) for f in files))
    except UploadRejected as exc:
        return api_error(exc.code, exc.message, exc.status)
    items, statuses = [], []
    for outcome in outcomes:
        if outcome.prediction:
            # The answer to the upload that sent it is the one place the original name is echoed.
            items.append(prediction_json(outcome.prediction) | {"filename": outcome.filename})
            statuses.append(201)
        else:
            error = outcome.rejection
            items.append(
                {
                    "filename": outcome.filename,
                    "error": {"code": error.code, "message": error.message},
                    "status": error.status,
                }
            )
            statuses.append(error.status)
    if len(items) == 1 and statuses[0] != 201:
        return api_error(items[0]["error"]["code"], items[0]["error"]["message"], statuses[0])
    if 201 not in statuses:
        # Every file in the batch was refused: the request as a whole failed, each item says why.
        return api_error(
            "all_files_rejected",
            "None of the files could be screened; see each item.",
            max(statuses, key=statuses.count),
            predictions=items,
        )
    return jsonify(predictions=items), 201 if all(s == 201 for s in statuses) else 207


@bp.route("/predictions/<int:prediction_id>", methods=["GET"])
@token_required
def get_prediction(prediction_id: int):
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        return api_error("not_found", f"No prediction {prediction_id}.", 404)
    if not prediction.visible_to(g.api_user):
        return api_error("forbidden", "You can only read your own predictions.", 403)
    record_audit(g.api_user.username, "prediction_viewed", f"prediction {prediction.id}", "api")
    db.session.commit()
    return jsonify(prediction_json(prediction))


@bp.route("/predictions", methods=["GET"])
@token_required
def list_predictions():
    if not g.api_user.is_admin:
        return api_error("forbidden", "Listing all predictions is for administrators.", 403)
    form = HistoryFilterForm(request.args)
    if not form.validate():
        return api_error("invalid_filter", form_errors(form), 400)
    per_page = min(int_arg("per_page", 50, 1, MAX_PAGE), 200)  # larger pages are served at 200
    page = db.paginate(
        filtered_predictions(form), page=int_arg("page", 1, 1, MAX_PAGE), per_page=per_page, error_out=False
    )
    return jsonify(
        predictions=[prediction_json(p) for p in page.items],
        page=page.page,
        per_page=per_page,
        total=page.total,
        pages=page.pages,
    )


@bp.route("/audit-events", methods=["GET"])
@token_required
def list_audit_events():
    if not g.api_user.is_admin:
        return api_error("forbidden", "The audit trail is for administrators.", 403)
    form = AuditFilterForm(request.args)
    if not form.validate():
        return api_error("invalid_filter", form_errors(form), 400)
    per_page = min(int_arg("per_page", 50, 1, MAX_PAGE), 200)
    page = db.paginate(filtered_events(form), page=int_arg("page", 1, 1, MAX_PAGE), per_page=per_page, error_out=False)
    return jsonify(
        events=[event_json(e) for e in page.items],
        page=page.page,
        per_page=per_page,
        total=page.total,
        pages=page.pages,
    )


@bp.route("/tokens", methods=["GET"])
@token_required
def list_tokens():
    """The caller's own tokens (never a secret: those are shown once, when issued)."""
    return jsonify(tokens=[token_json(t) for t in g.api_user.tokens])


@bp.route("/tokens/<int:token_id>", methods=["DELETE"])
@token_required
def revoke_own_token(token_id: int):
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != g.api_user.id:
        return api_error("not_found", f"You have no token {token_id}.", 404)
    revoke_token(token)
    db.session.commit()
    return jsonify(token_json(token))


@bp.route("/openapi.json")
@token_required
def openapi():
    return jsonify(openapi_document(url_for("api.create_predictions", _external=False).rsplit("/", 1)[0]))
