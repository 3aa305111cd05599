"""Marshmallow schemas of the API: each one parses or serialises, and the same one documents.

Request schemas (query parameters, multipart fields) are read by `@bp.arguments`; a value that
breaks them is refused with 400 before the view runs. Response schemas serialise what the views
return and become the OpenAPI document's `components.schemas`.
"""

from __future__ import annotations

from flask_smorest.fields import Upload
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_dump, validate, validates_schema
from marshmallow.utils import missing

from ..date_range import backwards
from ..inference.labels import NORMAL, PNEUMONIA, VERDICTS
from ..inference.scores import rounded
from ..models import FEEDBACK_LABELS, SOURCES, Prediction, iso_utc
from ..screening.service import Screened

# Ids are INTEGER keys, 32-bit on PostgreSQL: a larger number names no row, and the database would
# refuse it as a query parameter ("integer out of range") instead of finding nothing.
MAX_ID = 2**31 - 1
# Far beyond any real history, and (page - 1) * per_page stays a 64-bit offset.
MAX_PAGE = 2**31 - 1
MAX_PER_PAGE = 200
# Names as stored (64 characters); control characters cannot be in one (PostgreSQL refuses NUL outright).
PRINTABLE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="Control characters are not allowed.")


class ResponseSchema(Schema):
    class Meta:
        # No additionalProperties: false in the document: v1 may add fields to a response (docs/api.md).
        unknown = EXCLUDE


# --- errors -----------------------------------------------------------------


class ErrorDetailSchema(ResponseSchema):
    code = fields.String(required=True, metadata={"description": "machine-readable, stable within v1"})
    message = fields.String(required=True, metadata={"description": "for people; wording may change"})


class ErrorSchema(ResponseSchema):
    """Every error answer of the API (and of unknown /api/ paths) has this body."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class RejectedFileSchema(ResponseSchema):
    """A file of a batch that was refused; the others in the batch were still screened."""

    filename = fields.String(required=True, metadata={"description": "sanitised original file name"})
    status = fields.Integer(
        required=True, attribute="rejection.status", metadata={"description": "the status this file alone would get"}
    )
    error = fields.Nested(ErrorDetailSchema, required=True, attribute="rejection")


class BatchErrorSchema(ErrorSchema):
    """The error body; when every file of a batch was refused, `predictions` says why for each one."""

    predictions = fields.List(fields.Nested(RejectedFileSchema))


# --- predictions ------------------------------------------------------------


class UtcDateTime(fields.DateTime):
    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else iso_utc(value)


class Rounded(fields.Float):
    """A probability or a threshold, to inference/scores.py's places."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else rounded(value)


class Inline(fields.Nested):
    """A nested object whose fields are read from the parent object itself."""

    def get_value(self, obj, attr, accessor=None, default=missing):
        return obj


class ProbabilitiesSchema(ResponseSchema):
    NORMAL = Rounded(required=True)
    PNEUMONIA = Rounded(required=True)


class ImageSchema(ResponseSchema):
    format = fields.String(required=True, attribute="image_format", metadata={"example": "JPEG"})
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    size = fields.Integer(required=True, attribute="file_size", metadata={"description": "bytes"})
    sha256 = fields.String(required=True, metadata={"description": "of the uploaded file"})


class FeedbackSchema(ResponseSchema):
    label = fields.String(required=True, validate=validate.OneOf(list(FEEDBACK_LABELS)))
    comment = fields.String(required=True)
    by = fields.String(required=True, attribute="user.username")
    created_at = UtcDateTime(required=True)


class PredictionSchema(ResponseSchema):
    id = fields.Integer(required=True, metadata={"example": 42})
    filename = fields.String(
        required=True,
        metadata={
            "description": "the stored name: upload-<id>-<n>.<ext> unless STORE_ORIGINAL_FILENAMES; "
            "the answer to an upload echoes the name as sent"
        },
    )
    label = fields.String(required=True, validate=validate.OneOf(VERDICTS))
    probabilities = fields.Nested(
        ProbabilitiesSchema,
        required=True,
        metadata={
            "description": f"calibrated {NORMAL}/{PNEUMONIA}; sum to 1. With label UNKNOWN they are the model's "
            "scores, not a reading of the image"
        },
    )
    unknown_reason = fields.String(
        required=True, allow_none=True, metadata={"description": "why the verdict is UNKNOWN; null otherwise"}
    )
    caution = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "a warning that comes with an answered verdict, e.g. a DICOM header age outside "
            "the validated age range; null when there is none"
        },
    )
    model_version = fields.String(required=True)
    created_at = UtcDateTime(required=True)
    threshold = Rounded(
        required=True,
        metadata={
            "description": "the decision threshold the film was answered at: PNEUMONIA at or above it, NORMAL "
            "below it, except that a probability within the model's uncertainty band of it (its card's "
            "unknown.uncertainty_band) is answered UNKNOWN"
        },
    )
    site_calibration_id = fields.Integer(
        allow_none=True, metadata={"description": "the site operating point the threshold came from; null: the card's"}
    )
    image = Inline(ImageSchema, required=True)
    facts = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"description": "non-identifying acquisition facts (DICOM modality, view ...)"},
    )
    latency_ms = fields.Float(required=True, metadata={"description": "server-side analysis time"})
    user = fields.String(
        required=True,
        attribute="submitter",
        metadata={"description": "who uploaded it; `PACS` for films from the PACS"},
    )
    source = fields.String(
        required=True,
        validate=validate.OneOf(SOURCES),
        metadata={"description": "where the film came from: the upload page, the API, or the PACS (DICOM node)"},
    )
    feedback = fields.Nested(FeedbackSchema, metadata={"description": "the radiologist reading, once recorded"})

    @post_dump
    def omit_missing_feedback(self, data, **kwargs):
        if data.get("feedback") is None:
            data.pop("feedback", None)
        return data


class PredictionBatchSchema(ResponseSchema):
    predictions = fields.List(fields.Nested(PredictionSchema), required=True)


class OneOf(fields.Field):
    """A value dumped by the schema for its type; documented as `oneOf` those schemas (see spec.py)."""

    def __init__(self, schemas: dict[type, type[Schema]], **kwargs):
        super().__init__(**kwargs)
        self.schemas = schemas

    def _serialize(self, value, attr, obj, **kwargs):
        schema = next(schema for kind, schema in self.schemas.items() if isinstance(value, kind))
        return schema().dump(value)


class PartialBatchSchema(ResponseSchema):
    predictions = fields.List(
        OneOf({Prediction: PredictionSchema, Screened: RejectedFileSchema}),
        required=True,
        metadata={"description": "in upload order; a refused file has `error` and `status` instead of a result"},
    )


class PredictionPageSchema(ResponseSchema):
    predictions = fields.List(fields.Nested(PredictionSchema), required=True, metadata={"description": "newest first"})
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "predictions matching the filters"})
    pages = fields.Integer(required=True)


# --- requests -----------------------------------------------------------------


class UploadSchema(Schema):
    error_code = "no_file"  # read by errors.ArgumentParser

    class Meta:
        unknown = EXCLUDE  # other form parts are ignored, not refused

    file = fields.List(
        Upload(),
        required=True,
        validate=validate.Length(min=1),
        error_messages={
            # A part named `file` without a filename is a text field, not a file: say so, or the client
            # who sent exactly "a field named file" (curl -F 'file=<film.dcm') cannot see the mistake.
            "required": "Send one or more files in multipart form fields named 'file', each as a file part "
            "with a filename (curl -F file=@film.dcm; a part without a filename is read as text)."
        },
        metadata={"description": "one or more image files (JPEG, PNG, DICOM ...), each in a part named `file`"},
    )


def filter_text(max_length: int) -> list:
    """A free-text filter's rules. Empty is refused, not read as no filter: `user=` listed every user's
    films, so a client that sent an empty field for "this user" exported them all and took it for one's."""
    return [validate.Length(min=1, max=max_length), PRINTABLE]


class DaysFilterSchema(Schema):
    """A listing filtered by UTC days, `date_from` to `date_to`, both inclusive: never backwards."""

    @validates_schema
    def days_in_order(self, data, **kwargs):
        message = backwards(data.get("date_from"), data.get("date_to"), "date_from", "date_to")
        if message:
            raise ValidationError(message, field_name="date_to")


class PredictionFilterSchema(DaysFilterSchema):
    error_code = "invalid_filter"  # read by errors.ArgumentParser

    verdict = fields.String(validate=validate.OneOf(VERDICTS))
    date_from = fields.Date(metadata={"description": "first day (UTC), inclusive", "example": "2026-01-01"})
    date_to = fields.Date(metadata={"description": "last day (UTC), inclusive", "example": "2026-01-31"})
    user = fields.String(validate=filter_text(64), metadata={"description": "username"})
    model_version = fields.String(validate=filter_text(64))
    source = fields.String(validate=validate.OneOf(SOURCES), metadata={"description": "where the films came from"})
    reviewed = fields.String(
        validate=validate.OneOf(["yes", "no"]), metadata={"description": "with or without a radiologist reading"}
    )
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))


# --- tokens and the audit trail -------------------------------------------------


class TokenSchema(ResponseSchema):
    """An API token as its owner sees it: never the secret, which is shown once when issued."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(["active", "expired", "revoked"]))
    created_at = UtcDateTime(required=True)
    expires_at = UtcDateTime(required=True)
    last_used_at = UtcDateTime(required=True, allow_none=True, metadata={"description": "to the minute"})
    revoked_at = UtcDateTime(required=True, allow_none=True)


class TokenListSchema(ResponseSchema):
    tokens = fields.List(fields.Nested(TokenSchema), required=True)


class AuditEventSchema(ResponseSchema):
    id = fields.Integer(required=True)
    time = UtcDateTime(required=True, attribute="created_at")
    user = fields.String(required=True, attribute="actor", metadata={"description": "user name, or cli:NAME"})
    action = fields.String(required=True, metadata={"example": "prediction_viewed"})
    detail = fields.Method("detail_text", required=True, metadata={"description": "target and details"})
    ip = fields.String(required=True, metadata={"description": "client address; empty for the command line"})

    def detail_text(self, event) -> str:
        return "; ".join(part for part in (event.target, event.details) if part)


class AuditEventPageSchema(ResponseSchema):
    events = fields.List(fields.Nested(AuditEventSchema), required=True, metadata={"description": "newest first"})
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)
    pages = fields.Integer(required=True)


class AuditFilterSchema(DaysFilterSchema):
    error_code = "invalid_filter"  # read by errors.ArgumentParser

    action = fields.String(validate=filter_text(64), metadata={"example": "sign_in"})
    user = fields.String(
        validate=filter_text(64),
        metadata={"description": "the acting user name; cli: every shell command"},
    )
    target = fields.String(
        validate=filter_text(255),
        metadata={"description": "what the action was on, matched whole", "example": "prediction 37"},
    )
    date_from = fields.Date(metadata={"description": "first day (UTC), inclusive"})
    date_to = fields.Date(metadata={"description": "last day (UTC), inclusive"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))
