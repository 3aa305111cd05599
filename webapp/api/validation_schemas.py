"""Response schemas of the validation-run, site-calibration and monitoring operations."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..models import RUN_STATES
from ..validation.monitoring import DEFAULT_WEEKS, MAX_WEEKS
from ..validation.report import SHORTFALL_FLAGGED
from .schemas import ResponseSchema, Rounded, UtcDateTime

INTERVAL = fields.List(fields.Float(), allow_none=True, metadata={"description": "95% interval [low, high]"})


class ProgressSchema(ResponseSchema):
    done = fields.Integer(required=True, metadata={"description": "films processed (answered or refused)"})
    total = fields.Integer(required=True)


class RunMetricsSchema(ResponseSchema):
    n = fields.Integer(required=True, metadata={"description": "films scored"})
    unknown_rate = fields.Float(allow_none=True)
    auc = fields.Float(allow_none=True)
    auc_ci = INTERVAL
    sensitivity = fields.Float(allow_none=True, metadata={"description": "over answered films"})
    sensitivity_ci = INTERVAL
    specificity = fields.Float(allow_none=True, metadata={"description": "over answered films"})
    specificity_ci = INTERVAL
    ece = fields.Float(allow_none=True)
    threshold = Rounded(required=True, metadata={"description": "the threshold in force for the run"})
    refused = fields.Integer(metadata={"description": "unreadable films, not scored"})


class OperatingPointSchema(ResponseSchema):
    name = fields.String(metadata={"example": "max Youden J"})
    threshold = Rounded(required=True)
    sensitivity = fields.Float(allow_none=True, metadata={"description": "every scored film by its score"})
    sensitivity_ci = fields.List(
        fields.Float(), allow_none=True, metadata={"description": "Wilson 95% interval [low, high] of the sensitivity"}
    )
    specificity = fields.Float(allow_none=True, metadata={"description": "every scored film by its score"})
    specificity_ci = fields.List(
        fields.Float(), allow_none=True, metadata={"description": "Wilson 95% interval [low, high] of the specificity"}
    )
    target = fields.Float(
        allow_none=True, metadata={"description": "the sensitivity this point was chosen to reach; null: none"}
    )
    short_of_target = fields.Boolean(
        metadata={
            "description": f"the sensitivity interval's lower end lies more than {SHORTFALL_FLAGGED} below `target`"
        }
    )
    uncertain_rate = fields.Float(
        allow_none=True,
        metadata={"description": "share of scored films within the model's uncertainty band of the threshold"},
    )


class RunCreatedSchema(ResponseSchema):
    id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATES))


class ValidationRunSchema(RunCreatedSchema):
    progress = fields.Nested(ProgressSchema, required=True)
    archive = fields.String(attribute="archive_name")
    created_at = UtcDateTime(required=True)
    model_version = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    metrics = fields.Nested(RunMetricsSchema, allow_none=True, metadata={"description": "null until done"})
    operating_points = fields.List(fields.Nested(OperatingPointSchema), required=True)


class RedactionSchema(ResponseSchema):
    run_id = fields.Integer(required=True)
    films_redacted = fields.Integer(
        required=True, metadata={"description": "films whose name or pictures were removed now (0: none were left)"}
    )


class SiteCalibrationSchema(ResponseSchema):
    id = fields.Integer(required=True)
    threshold = Rounded(required=True)
    validation_run_id = fields.Integer(required=True)
    model_version = fields.String(required=True)
    reason = fields.String(required=True)
    adopted_by = fields.String(required=True, attribute="adopted_by.username")
    adopted_at = UtcDateTime(required=True, attribute="created_at")
    withdrawn_at = UtcDateTime(allow_none=True)


class MonitoringQuerySchema(Schema):
    error_code = "invalid_filter"  # read by errors.ArgumentParser

    weeks = fields.Integer(
        load_default=DEFAULT_WEEKS,
        validate=validate.Range(min=1, max=MAX_WEEKS),
        metadata={"description": "how many weeks, the current one last"},
    )


class WeekSchema(ResponseSchema):
    week = fields.String(required=True, metadata={"description": "its Monday (UTC), YYYY-MM-DD"})
    films = fields.Integer(required=True)
    verdicts = fields.Dict(
        keys=fields.String(), values=fields.Integer(), required=True, metadata={"description": "films per verdict"}
    )
    unknown_rate = fields.Float(required=True, allow_none=True, metadata={"description": "null without films"})
    unknown_reasons = fields.Dict(
        keys=fields.String(), values=fields.Float(), required=True, metadata={"description": "share of the films"}
    )
    reviewed = fields.Integer(required=True, metadata={"description": "films with a radiologist reading"})
    reviewed_unknown = fields.Integer(
        required=True, metadata={"description": "of those, films the model answered UNKNOWN (left out of agreement)"}
    )
    agreement = fields.Float(
        required=True,
        allow_none=True,
        metadata={
            "description": "share of the reviewed films the model answered NORMAL or PNEUMONIA whose reading agrees; "
            "null without any"
        },
    )
    psi = fields.Dict(
        keys=fields.String(),
        values=fields.Float(allow_none=True),
        required=True,
        metadata={"description": "drift per score; empty under the minimum films or without a reference"},
    )
    drift_alert = fields.Boolean(required=True)


class MonitoringSchema(ResponseSchema):
    model_version = fields.String(required=True)
    reference_run_id = fields.Integer(allow_none=True)
    psi_alert_level = fields.Float(required=True)
    min_films_for_drift = fields.Integer(required=True, metadata={"description": "films a week needs for drift"})
    min_reference_films = fields.Integer(
        required=True, metadata={"description": "scored films a validation run needs to be the drift reference"}
    )
    weeks = fields.List(
        fields.Nested(WeekSchema), required=True, metadata={"description": "one entry per week, oldest first"}
    )
