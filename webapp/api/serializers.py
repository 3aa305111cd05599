from datetime import UTC

from ..models import ApiToken, Prediction


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
        "image": {
            "format": p.image_format,
            "width": p.width,
            "height": p.height,
            "size": p.file_size,
            "sha256": p.sha256,
        },
        "facts": p.facts or {},
        "latency_ms": p.latency_ms,
        "user": p.user.username,
    }
    if p.feedback:
        data["feedback"] = {
            "label": p.feedback.label,
            "comment": p.feedback.comment,
            "by": p.feedback.user.username,
            "created_at": iso_utc(p.feedback.created_at),
        }
    return data


def token_json(t: ApiToken) -> dict:
    return {
        "id": t.id,
        "name": t.name,
        "state": t.state,
        "created_at": iso_utc(t.created_at),
        "expires_at": iso_utc(t.expires_at),
        "last_used_at": iso_utc(t.last_used_at) if t.last_used_at else None,
        "revoked_at": iso_utc(t.revoked_at) if t.revoked_at else None,
    }
