from datetime import UTC

from ..models import Prediction, SiteCalibration, ValidationRun


def iso_utc(moment) -> str:
    # SQLite hands back naive datetimes; every time we store is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prediction_json(p: Prediction) -> dict:
    data = {
        "id": p.id,
        "filename": p.filename,
        "label": p.label,
        "probabilities": {label: round(value, 6) for label, value in p.probabilities.items()},
        "unknown_reason": p.unknown_reason,
        "model_version": p.model_version,
        "created_at": iso_utc(p.created_at),
        "threshold": p.threshold,
        "site_calibration_id": p.site_calibration_id,
        "image": {
            "format": p.image_format,
            "width": p.width,
            "height": p.height,
            "size": p.file_size,
            "sha256": p.sha256,
        },
        "facts": p.facts or {},
        "latency_ms": p.latency_ms,
        "user": p.submitter,
        "source": p.source,
    }
    if p.feedback:
        data["feedback"] = {
            "label": p.feedback.label,
            "comment": p.feedback.comment,
            "by": p.feedback.user.username,
            "created_at": iso_utc(p.feedback.created_at),
        }
    return data


# The figures of a finished run that the API publishes (the report page shows them all).
RUN_METRIC_FIELDS = (
    "n",
    "unknown_rate",
    "auc",
    "auc_ci",
    "sensitivity",
    "sensitivity_ci",
    "specificity",
    "specificity_ci",
    "ece",
    "threshold",
)


def validation_run_json(run: ValidationRun, progress: dict) -> dict:
    data = {
        "id": run.id,
        "status": run.status,
        "progress": progress,
        "archive": run.archive_name,
        "created_at": iso_utc(run.created_at),
        "model_version": run.model_version,
        "metrics": None,
        "operating_points": [],
    }
    if run.error:
        data["error"] = run.error
    if run.metrics:
        data["metrics"] = {key: run.metrics.get(key) for key in RUN_METRIC_FIELDS}
        data["metrics"]["refused"] = run.metrics.get("refused")
        data["operating_points"] = run.metrics.get("operating_points", [])
    return data


def calibration_json(c: SiteCalibration) -> dict:
    return {
        "id": c.id,
        "threshold": c.threshold,
        "validation_run_id": c.validation_run_id,
        "model_version": c.model_version,
        "reason": c.reason,
        "adopted_by": c.adopted_by.username,
        "adopted_at": iso_utc(c.created_at),
        "withdrawn_at": iso_utc(c.withdrawn_at) if c.withdrawn_at else None,
    }
