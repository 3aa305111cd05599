"""API operations. Each view's decorators are its contract: parsing, validation, answers, documentation.

The pattern (docs/api.md "Adding an endpoint"): `@bp.route` then `@token_required` (or
`@admin_token_required`), then `@bp.arguments(Schema, location=...)` for what the request carries,
`@bp.response(status, Schema)` for the success answer (the schema serialises what the view returns),
and one `@bp.alt_response` per other status the operation can answer. A paged listing uses `@paged`.
"""

from collections.abc import Callable
from functools import wraps

from flask import current_app, g, jsonify
from marshmallow import Schema

from ..access import request_token, revoke_token
from ..audit_log import audit_query, record_trail_viewed
from ..extensions import db
from ..filenames import sent_filename
from ..history.filters import prediction_query
from ..models import SOURCE_API, ApiToken, Prediction, record_audit
from ..params import paginate
from ..ratelimits import upload_per_token, upload_per_user
from ..screening.service import UploadRejected, screen_batch
from . import BASE_PATH, bp, examples
from .auth import admin_token_required, token_required
from .bodies import plain_body
from .errors import api_error
from .schemas import (
    MAX_ID,
    AuditEventPageSchema,
    AuditFilterSchema,
    BatchErrorSchema,
    ErrorSchema,
    PartialBatchSchema,
    PredictionBatchSchema,
    PredictionFilterSchema,
    PredictionPageSchema,
    PredictionSchema,
    RejectedFileSchema,
    TokenListSchema,
    TokenSchema,
    UploadSchema,
)
from .spec import openapi_document

# The upload's answer, serialised by one instance each: building a schema copies its declared fields,
# 0.14 ms an item, more than the dump itself (0.03 ms). A dump leaves the instance as it was.
PREDICTION_ANSWER, REJECTED_FILE = PredictionSchema(), RejectedFileSchema()

# Writes a page read to the audit trail: (rows on the page, the filters applied, page, per_page).
Audited = Callable[[int, dict, int, int], None]


def audit_export(rows: int, filters: dict, page: int, per_page: int) -> None:
    """A page of patients' records read by a script is an export, one audit row per request like the
    history CSV's: who, when, from where, how many rows and which filters and page."""
    shown = ", ".join(f"{name}={value}" for name, value in filters.items()) or "none"
    record_audit(
        g.api_user.username, "export", f"API list, {rows} rows", f"filters: {shown}; page={page}, per_page={per_page}"
    )
    db.session.commit()


def audit_trail_read(rows: int, filters: dict, page: int, per_page: int) -> None:
    record_trail_viewed(g.api_user.username, rows, filters, page)


def paged(
    key: str,
    filters: type[Schema],
    page: type[Schema],
    operation_id: str,
    *,
    audited: Audited | None = None,
    **response,
):
    """The decorators of a paged listing, in place of its arguments, response and doc lines.

    `filters` (a query-string schema with `page` and `per_page`) is parsed; the view gets the other
    filters and returns a query, newest first; the answer is one page of it,
    `{key: [...], "page", "per_page", "total", "pages"}`, documented by the `page` schema.
    `audited(rows, filters, page, per_page)`: writes each page read to the audit trail (the rows are
    patients' records, or the trail itself).
    """

    def decorate(view):
        @wraps(view)
        def listing(arguments: dict):
            page_number, per_page = arguments.pop("page"), arguments.pop("per_page")
            found = paginate(view(arguments), page_number, per_page)
            if audited:
                audited(len(found.items), arguments, page_number, per_page)
            return {
                key: found.items,
                "page": found.page,
                "per_page": per_page,
                "total": found.total,
                "pages": found.pages,
            }

        # In the order of a written stack: @bp.arguments, then @bp.response, then @bp.doc.
        listing = bp.doc(operationId=operation_id)(listing)
        listing = bp.response(200, page, description=f"One page of {key}, newest first.", **response)(listing)
        return bp.arguments(filters, location="query")(listing)

    return decorate


@bp.route("/predictions", methods=["POST"])
@upload_per_user
@upload_per_token
@token_required
@plain_body
@bp.arguments(UploadSchema, location="files", description="multipart/form-data, the files in parts named `file`")
@bp.response(201, PredictionBatchSchema, description="Every file was screened and logged.", example=examples.BATCH)
@bp.alt_response(
    207,
    schema=PartialBatchSchema,
    success=True,
    description="Some files were screened, others refused: those items carry `error` and `status`.",
    example=examples.PARTIAL_BATCH,
)
@bp.errors(
    (400, ErrorSchema, "`no_file`: no part named `file`; `too_many_files`: over MAX_FILES_PER_UPLOAD."),
    (
        413,
        BatchErrorSchema,
        "`too_large`: the request is over MAX_UPLOAD_MB; `too_large_to_decode`: the one file would need more "
        "than DECODE_MEMORY_MB decoded (or most of a refused batch).",
    ),
    (
        415,
        BatchErrorSchema,
        "Not a kind of file we screen (the one file, or most of a batch in which none could be screened); "
        "`unsupported_encoding`: a body sent with a Content-Encoding (gzip ...).",
    ),
    (
        422,
        BatchErrorSchema,
        "An image we cannot screen: corrupt, truncated, too small ... (or most of a refused batch).",
    ),
    (
        503,
        BatchErrorSchema,
        "`model_unavailable`: the model is not available on this server right now; `database_unavailable`: "
        "the database cannot be reached and nothing was saved (with `Retry-After`).",
    ),
)
@bp.doc(operationId="createPredictions")
def create_predictions(upload):
    """Screen one or more radiographs

    Each file is analysed and logged on its own: one bad file does not cost the others their
    results, and a refused file leaves nothing behind.
    """
    try:
        outcomes = screen_batch(g.api_user, ((sent_filename(f), f.read()) for f in upload["file"]), source=SOURCE_API)
    except UploadRejected as exc:
        return api_error(exc.code, exc.message, exc.status)
    refused = [outcome for outcome in outcomes if outcome.rejection]
    if len(outcomes) == 1 and refused:
        return api_error(refused[0].rejection.code, refused[0].rejection.message, refused[0].rejection.status)
    if len(refused) == len(outcomes):
        # Every file in the batch was refused: the request as a whole failed, each item says why.
        statuses = [outcome.rejection.status for outcome in refused]
        return api_error(
            "all_files_rejected",
            "None of the files could be screened; see each item.",
            max(statuses, key=statuses.count),
            predictions=REJECTED_FILE.dump(refused, many=True),
        )
    # The answer to the upload that sent them is the one place the names as sent are echoed.
    items = [
        PREDICTION_ANSWER.dump(outcome.prediction) | {"filename": outcome.filename}
        if outcome.prediction
        else REJECTED_FILE.dump(outcome)
        for outcome in outcomes
    ]
    return jsonify(predictions=items), 207 if refused else 201


@bp.route(f"/predictions/<int(min=1, max={MAX_ID}):id>", methods=["GET"])
@token_required
@bp.response(200, PredictionSchema, description="The prediction.", example=examples.PREDICTION)
@bp.alt_response(403, response="FORBIDDEN")
@bp.alt_response(404, response="NOT_FOUND")
@bp.doc(operationId="getPrediction")
def get_prediction(id: int):  # `id`: the path parameter's published name
    """One prediction (your own or the PACS's, or any for administrators)"""
    prediction = db.session.get(Prediction, id)
    if prediction is None:
        return api_error("not_found", f"No prediction {id}.", 404)
    if not prediction.visible_to(g.api_user):
        record_audit(g.api_user.username, "prediction_view_refused", f"prediction {prediction.id}", "api")
        db.session.commit()
        return api_error("forbidden", "You can only read your own predictions.", 403)
    record_audit(g.api_user.username, "prediction_viewed", f"prediction {prediction.id}", "api")
    db.session.commit()
    return prediction


@bp.route("/predictions", methods=["GET"])
@admin_token_required
@paged(
    "predictions",
    PredictionFilterSchema,
    PredictionPageSchema,
    "listPredictions",
    audited=audit_export,
    example=examples.PAGE,
)
def list_predictions(filters: dict):
    """List predictions (administrators)

    The filters combine (AND). Past the last page, `predictions` is empty. Each page read is written
    to the audit trail (action `export`, with the row count, the filters and the page).
    """
    return prediction_query(**filters)


@bp.route("/audit-events", methods=["GET"])
@admin_token_required
@paged(
    "events",
    AuditFilterSchema,
    AuditEventPageSchema,
    "listAuditEvents",
    audited=audit_trail_read,
    example=examples.AUDIT_PAGE,
)
def list_audit_events(filters: dict):
    """The audit trail (administrators)

    Who did what, when and from which address: sign-ins, views of films, exports, token and user
    administration. Filters combine (AND); `user` is the acting user name. Each page read is itself
    written to the trail (action `audit_viewed`, with the row count, the filters and the page).
    """
    return audit_query(**filters)


@bp.route("/tokens", methods=["GET"])
@token_required
@bp.response(200, TokenListSchema, description="Your API tokens, oldest first.", example=examples.TOKENS)
@bp.doc(operationId="listTokens")
def list_tokens():
    """Your API tokens

    Name, state, expiry and last use of each of your tokens; never a secret (those are shown once,
    when a token is issued).
    """
    return {"tokens": g.api_user.tokens}


@bp.route(f"/tokens/<int(min=1, max={MAX_ID}):id>", methods=["DELETE"])
@token_required
@bp.response(200, TokenSchema, description="The token, now revoked.", example=examples.TOKEN)
@bp.alt_response(404, response="NOT_FOUND")
@bp.alt_response(409, schema=ErrorSchema, description="`token_in_use`: the token this request is signed with.")
@bp.doc(operationId="revokeToken")
def revoke_own_token(id: int):  # `id`: the path parameter's published name
    """Revoke one of your API tokens

    Not the one this request uses (so a script cannot lock itself out by mistake): revoke that one
    with another token, on the admin page or with `flask users revoke-token`.
    """
    token = db.session.get(ApiToken, id)
    if token is None or token.user_id != g.api_user.id:
        return api_error("not_found", f"You have no token {id}.", 404)
    if token.id == request_token().id:
        return api_error("token_in_use", "This request is signed with that token; revoke it with another one.", 409)
    revoke_token(token)
    db.session.commit()
    return token


@bp.route("/openapi.json", methods=["GET"])
@token_required
@bp.response(200, {"type": "object"}, description="This document (OpenAPI 3.1).")
@bp.doc(operationId="getOpenapiDocument")
def openapi():
    """The OpenAPI document of this API"""
    return jsonify(openapi_document(current_app.extensions["cxr_api"], BASE_PATH))
