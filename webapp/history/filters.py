"""The history filters, shared by the clinician's own list, the admin list, CSV export and the API."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from flask_wtf import FlaskForm
from sqlalchemy import Select, select
from wtforms import DateField, SelectField, StringField
from wtforms.validators import Optional

from ..extensions import db
from ..models import LABELS, Feedback, Prediction, User
from ..params import plausible_date


class HistoryFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    verdict = SelectField("Verdict", choices=[("", "Any")] + [(x, x.title()) for x in LABELS], validators=[Optional()])
    date_from = DateField("From", validators=[Optional(), plausible_date])
    date_to = DateField("To", validators=[Optional(), plausible_date])
    user = StringField("User", validators=[Optional()])
    model_version = SelectField("Model version", choices=[("", "Any")], validate_choice=False, validators=[Optional()])
    reviewed = SelectField(
        "Reviewed", choices=[("", "Any"), ("yes", "Reviewed"), ("no", "Not reviewed")], validators=[Optional()]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = db.session.scalars(
            select(Prediction.model_version).distinct().order_by(Prediction.model_version)
        ).all()
        self.model_version.choices = [("", "Any")] + [(v, v) for v in versions]


def _day_start(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def filtered_predictions(form: HistoryFilterForm, owner: User | None = None) -> Select:
    """Newest first. `owner` limits the list to one user's predictions (a clinician's own)."""
    query = select(Prediction).order_by(Prediction.created_at.desc(), Prediction.id.desc())
    if owner is not None:
        query = query.where(Prediction.user_id == owner.id)
    elif form.user.data:
        query = query.join(User, Prediction.user_id == User.id).where(User.username == form.user.data.strip())
    if form.verdict.data:
        query = query.where(Prediction.label == form.verdict.data)
    if form.date_from.data:
        query = query.where(Prediction.created_at >= _day_start(form.date_from.data))
    if form.date_to.data:
        query = query.where(Prediction.created_at < _day_start(form.date_to.data + timedelta(days=1)))
    if form.model_version.data:
        query = query.where(Prediction.model_version == form.model_version.data)
    reviewed = select(Feedback.id).where(Feedback.prediction_id == Prediction.id).exists()
    if form.reviewed.data == "yes":
        query = query.where(reviewed)
    elif form.reviewed.data == "no":
        query = query.where(~reviewed)
    return query


def filter_args(form: HistoryFilterForm) -> dict[str, str]:
    """The active filters as query arguments, so pagination and export links keep them."""
    return {
        name: request_value
        for name, field in form._fields.items()
        if (request_value := field.raw_data[0] if field.raw_data else "")
    }
