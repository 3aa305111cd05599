"""Reading the audit trail: the filters shared by the admin page and the API, and its JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from flask_wtf import FlaskForm
from sqlalchemy import Select, select
from wtforms import DateField, StringField
from wtforms.validators import Length, Optional

from .models import AuditEvent, as_utc
from .params import plausible_date


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    action = StringField("Action", validators=[Optional(), Length(max=64)])
    user = StringField("User", validators=[Optional(), Length(max=64)])
    date_from = DateField("From", validators=[Optional(), plausible_date])
    date_to = DateField("To", validators=[Optional(), plausible_date])


def _day_start(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def filtered_events(form: AuditFilterForm) -> Select:
    """Newest first, narrowed by the form's action, user (the actor) and dates (UTC days)."""
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if form.action.data:
        query = query.where(AuditEvent.action == form.action.data.strip())
    if form.user.data:
        query = query.where(AuditEvent.actor == form.user.data.strip())
    if form.date_from.data:
        query = query.where(AuditEvent.created_at >= _day_start(form.date_from.data))
    if form.date_to.data:
        query = query.where(AuditEvent.created_at < _day_start(form.date_to.data + timedelta(days=1)))
    return query


def event_json(event: AuditEvent) -> dict:
    return {
        "id": event.id,
        "time": as_utc(event.created_at).isoformat().replace("+00:00", "Z"),
        "user": event.actor,
        "action": event.action,
        "detail": "; ".join(part for part in (event.target, event.details) if part),
        "ip": event.ip,
    }
