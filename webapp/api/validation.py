"""Validation runs and the site operating point over the API (admin tokens only)."""

from __future__ import annotations

import re

from flask import g, request
from flask.views import MethodView
from werkzeug.exceptions import RequestEntityTooLarge

from ..models import ValidationRun
from ..params import row_by_id
from ..site_threshold import active_calibration
from ..validation.archive import ArchiveRejected
from ..validation.deletion import DeletionRefused, delete_run
from ..validation.monitoring import weekly
from ..validation.redaction import RedactionRefused, redact_run
from ..validation.report import points_with_intervals
from ..validation.runs import create_run, progress, record_report_viewed, too_large, upload_limit
from ..validation.site import AdoptionRefused, adopt, current_model_version, withdraw
from . import bp
from .auth import admin_token_required
from .bodies import plain_body
from .errors import ApiError, api_error
from .schemas import MAX_ID, ErrorSchema
from .validation_schemas import (
    MonitoringQuerySchema,
    MonitoringSchema,
    RedactionSchema,
    RunCreatedSchema,
    SiteCalibrationSchema,
    ValidationRunSchema,
)

# Request bodies are read by the views themselves (an archive may be far larger than the upload
# limit for films, which an argument parser would enforce first), so they are documented here.
ARCHIVE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["archive"],
                "properties": {"archive": {"type": "string", "format": "binary", "description": "a labelled ZIP"}},
            }
        }
    },
}
CALIBRATION_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["validation_run_id", "threshold"],
                "properties": {
                    "validation_run_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "reason": {"type": "string", "maxLength": 500, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
                },
            }
        }
    },
}
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


UNAVAILABLE = "`model_unavailable`; `database_unavailable` (with `Retry-After`)."


def served_model_version() -> str:
    """The version of the model this server runs, or the API's 503 when it cannot be loaded."""
    try:
        return current_model_version()
    except AdoptionRefused as exc:
        raise ApiError(exc.code, exc.message, exc.status) from exc


@bp.route("/validation-runs", methods=["POST"])
@admin_token_required
@plain_body
@bp.response(202, RunCreatedSchema, description="The run is queued; poll GET /validation-runs/<id>.")
@bp.errors(
    (
        400,
        ErrorSchema,
        "`no_file`: no part named `archive`; `unsafe_path`: a member name pointing outside the archive.",
    ),
    (413, ErrorSchema, "`archive_too_large`, `too_many_files`: over VALIDATION_MAX_BYTES or VALIDATION_MAX_FILES."),
    (415, ErrorSchema, "`not_a_zip`; `unsupported_encoding`: a body sent with a Content-Encoding (gzip ...)."),
    (422, ErrorSchema, "An unusable archive: empty, unlabelled, unknown label folder, zip bomb, nested archive ..."),
    (
        503,
        ErrorSchema,
        "`storage_full`: the server's disk filled while the archive was stored, nothing was kept; "
        "`database_unavailable` (with `Retry-After`).",
    ),
)
@bp.doc(operationId="createValidationRun", requestBody=ARCHIVE_BODY)
def create_validation_run():
    """Start a validation run on a labelled ZIP (multipart part `archive`)"""
    request.max_content_length = upload_limit()
    try:
        upload = request.files.get("archive")
    except RequestEntityTooLarge:
        refusal = too_large()
        return api_error(refusal.code, refusal.message, refusal.status)
    try:
        run = create_run(g.api_user, upload)
    except ArchiveRejected as exc:
        return api_error(exc.code, exc.message, exc.status)
    return run


# GET and DELETE share one rule (a MethodView), not a rule each: Werkzeug tries the rules of one path
# in turn, and an id the converter refuses (0, past MAX_ID) after the other method's rule had matched
# the path answered 405 "use GET" instead of 404 (found by Schemathesis: DELETE /validation-runs/0).
@bp.route(f"/validation-runs/<int(min=1, max={MAX_ID}):run_id>")
class ValidationRunById(MethodView):
    @admin_token_required
    @bp.response(200, ValidationRunSchema)
    @bp.alt_response(404, schema=ErrorSchema, description="No such run.")
    @bp.doc(operationId="getValidationRun")
    def get(self, run_id: int):
        """A validation run: status, progress and, once done, its figures and proposed operating points"""
        run = row_by_id(ValidationRun, run_id)
        if run is None:
            return api_error("not_found", f"No validation run {run_id}.", 404)
        record_report_viewed(run, g.api_user.username, "api")
        metrics = run.metrics or {}
        return {
            "id": run.id,
            "status": run.status,
            "progress": progress(run),
            "archive_name": run.archive_name,
            "created_at": run.created_at,
            "model_version": run.model_version,
            "error": run.error,
            "metrics": metrics or None,
            "operating_points": points_with_intervals(metrics) if metrics else [],
        }

    @admin_token_required
    @bp.response(204, description="The run, its films' names, review copies, figures and archive are deleted.")
    @bp.alt_response(404, schema=ErrorSchema, description="No such run.")
    @bp.alt_response(
        409,
        schema=ErrorSchema,
        description="`run_working`: still queued or running (cancel it first, on its report page); "
        "`run_adopted`: a site threshold was adopted from it.",
    )
    @bp.doc(operationId="deleteValidationRun")
    def delete(self, run_id: int):
        """Delete an ended validation run with everything kept for it (audited)"""
        try:
            delete_run(run_id, g.api_user.username)
        except DeletionRefused as exc:
            return api_error(exc.code, exc.message, exc.status)
        return None


@bp.route(f"/validation-runs/<int(min=1, max={MAX_ID}):run_id>/redaction", methods=["POST"])
@admin_token_required
@bp.response(200, RedactionSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No such run.")
@bp.alt_response(409, schema=ErrorSchema, description="`run_working`: still queued or running.")
@bp.doc(operationId="redactValidationRun")
def redact_validation_run(run_id: int):
    """Replace an ended run's film names with `film <id>` and delete their review copies and heat maps; the
    figures stay (audited; a second call changes nothing)"""
    try:
        films = redact_run(run_id, g.api_user.username)
    except RedactionRefused as exc:
        return api_error(exc.code, exc.message, exc.status)
    return {"run_id": run_id, "films_redacted": films}


@bp.route("/site-calibration", methods=["POST"])
@admin_token_required
@plain_body
@bp.response(201, SiteCalibrationSchema)
@bp.alt_response(
    400,
    schema=ErrorSchema,
    description="`bad_json`; `bad_threshold`: not farther than the model's uncertainty band from 0 and 1 "
    "(0.05-0.95 on the shipped card), so one verdict could never be given.",
)
@bp.alt_response(404, schema=ErrorSchema, description="No such run.")
@bp.alt_response(
    409, schema=ErrorSchema, description="`run_not_done`; `adopted_meanwhile`: another adoption won at the same moment."
)
@bp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
@bp.alt_response(415, schema=ErrorSchema, description="`unsupported_encoding`: a body sent with a Content-Encoding.")
@bp.alt_response(422, schema=ErrorSchema, description="`too_few_films` (under 50 of a class), `other_model_version`.")
@bp.alt_response(
    503,
    schema=ErrorSchema,
    description="`model_unavailable`: the model card cannot be read; `database_unavailable` (with `Retry-After`).",
)
@bp.doc(operationId="adoptSiteCalibration", requestBody=CALIBRATION_BODY)
def adopt_site_calibration():
    """Adopt a threshold from a finished validation run as the site operating point"""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON parser goes (`silent` covers only ValueError)
        body = None
    if not isinstance(body, dict):
        return api_error(
            "bad_json", 'Send JSON: {"validation_run_id": <id>, "threshold": <0..1>, "reason": "..."}.', 400
        )
    run_id, threshold, reason = body.get("validation_run_id"), body.get("threshold"), body.get("reason", "")
    if isinstance(run_id, float) and run_id.is_integer():
        run_id = int(run_id)  # JSON does not tell 7 from 7.0; both are the integer 7
    numbers = [value for value in (run_id, threshold) if isinstance(value, int | float) and not isinstance(value, bool)]
    if not isinstance(run_id, int) or len(numbers) != 2:
        return api_error("bad_json", "validation_run_id must be an integer and threshold a number.", 400)
    if not isinstance(reason, str) or len(reason) > 500 or CONTROL_CHARACTERS.search(reason):
        return api_error("bad_json", "reason must be a string of at most 500 printable characters.", 400)
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        return api_error("not_found", f"No validation run {run_id}.", 404)
    try:
        calibration = adopt(run, float(threshold), reason.strip() or "adopted through the API", g.api_user)
    except AdoptionRefused as exc:
        return api_error(exc.code, exc.message, exc.status)
    return calibration


@bp.route("/site-calibration", methods=["GET"])
@admin_token_required
@bp.response(200, SiteCalibrationSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No site threshold in force: the model card's applies.")
@bp.alt_response(
    503, schema=ErrorSchema, description="`model_unavailable`; `database_unavailable` (with `Retry-After`)."
)
@bp.doc(operationId="getSiteCalibration")
def get_site_calibration():
    """The site operating point in force (404: the model card's threshold applies)"""
    version = served_model_version()
    calibration = active_calibration(version)
    if calibration is None:
        return api_error("not_found", "No site threshold is in force: predictions use the model card's.", 404)
    return calibration


@bp.route("/site-calibration", methods=["DELETE"])
@admin_token_required
@bp.response(204)
@bp.alt_response(404, schema=ErrorSchema, description="No site threshold was in force.")
@bp.alt_response(409, schema=ErrorSchema, description="`changed_meanwhile`: another admin changed it at that moment.")
@bp.alt_response(
    503, schema=ErrorSchema, description="`model_unavailable`; `database_unavailable` (with `Retry-After`)."
)
@bp.doc(operationId="withdrawSiteCalibration")
def withdraw_site_calibration():
    """Withdraw the site operating point: new predictions use the model card's threshold"""
    try:
        calibration = withdraw(g.api_user)
    except AdoptionRefused as exc:
        return api_error(exc.code, exc.message, exc.status)
    if calibration is None:
        return api_error("not_found", "No site threshold is in force.", 404)
    return None


@bp.route("/monitoring", methods=["GET"])
@admin_token_required
@bp.arguments(MonitoringQuerySchema, location="query")
@bp.response(200, MonitoringSchema)
@bp.alt_response(400, response="BAD_REQUEST")
@bp.alt_response(
    503, schema=ErrorSchema, description="`model_unavailable`; `database_unavailable` (with `Retry-After`)."
)
@bp.doc(operationId="getMonitoring")
def get_monitoring(query: dict):
    """Weekly monitoring figures and drift against the validation reference"""
    return weekly(served_model_version(), weeks=query["weeks"])
