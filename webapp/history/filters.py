"""The history filters, shared by the clinician's own list, the admin list, CSV export and the API.

The pages and their CSV export read a day in the display zone (DISPLAY_TIMEZONE), so the export
holds the rows the list shows; the API's days are UTC (docs/api.md)."""

from __future__ import annotations

from datetime import UTC, date, tzinfo

from flask_wtf import FlaskForm
from sqlalchemy import Select, func, or_, select
from wtforms import DateField, SelectField, StringField
from wtforms.validators import Optional

from ..date_range import not_before_date_from
from ..extensions import db
from ..local_time import day_bounds, display_zone
from ..models import LABELS, PACS_SUBMITTER, SOURCES, Feedback, Prediction, User, folded_username


class HistoryFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    verdict = SelectField("Verdict", choices=[("", "Any")] + [(x, x.title()) for x in LABELS], validators=[Optional()])
    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional(), not_before_date_from])
    user = StringField("User", validators=[Optional()])
    model_version = SelectField("Model version", choices=[("", "Any")], validate_choice=False, validators=[Optional()])
    source = SelectField("Source", choices=[("", "Any")] + [(s, s) for s in SOURCES], validators=[Optional()])
    reviewed = SelectField(
        "Reviewed", choices=[("", "Any"), ("yes", "Reviewed"), ("no", "Not reviewed")], validators=[Optional()]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = db.session.scalars(
            select(Prediction.model_version).distinct().order_by(Prediction.model_version)
        ).all()
        self.model_version.choices = [("", "Any")] + [(v, v) for v in versions]


def filtered_predictions(form: HistoryFilterForm, owner: User | None = None) -> Select:
    """Newest first. `owner` limits the list to one user's predictions (a clinician's own)."""
    return prediction_query(
        zone=display_zone(),
        verdict=form.verdict.data,
        date_from=form.date_from.data,
        date_to=form.date_to.data,
        user=None if owner is not None else form.user.data,
        model_version=form.model_version.data,
        source=form.source.data,
        reviewed=form.reviewed.data,
        owner=owner,
    )


def prediction_query(
    *,
    verdict: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    user: str | None = None,
    model_version: str | None = None,
    source: str | None = None,
    reviewed: str | None = None,
    owner: User | None = None,
    zone: tzinfo = UTC,
) -> Select:
    """The filters as plain values (the API validates them with its own schema), the days in `zone`.
    Newest first."""
    query = select(Prediction).order_by(Prediction.created_at.desc(), Prediction.id.desc())
    if owner is not None:
        query = query.where(Prediction.user_id == owner.id)
    elif user and user.strip():  # a box of spaces is no name: it found no prediction at all
        # Compared as names are (User.name_taken): "dr.lee" finds Dr.Lee's films, as no other account
        # can be called that (it found none, and "pacs" none of the PACS's).
        name = folded_username(user)
        by_account = Prediction.user_id.in_(select(User.id).where(func.lower(User.username) == name))
        # The films from the PACS have no account; their rows show PACS_SUBMITTER as the user, so that
        # name finds them too (it found nothing, though the answers said user "PACS").
        pacs = name == PACS_SUBMITTER.lower()
        query = query.where(or_(by_account, Prediction.user_id.is_(None)) if pacs else by_account)
    if verdict:
        query = query.where(Prediction.label == verdict)
    start, end = day_bounds(date_from, date_to, zone)
    if start:
        query = query.where(Prediction.created_at >= start)
    if end:
        query = query.where(Prediction.created_at < end)
    if model_version:
        query = query.where(Prediction.model_version == model_version)
    if source:
        query = query.where(Prediction.source == source)
    reviewed_rows = select(Feedback.id).where(Feedback.prediction_id == Prediction.id).exists()
    if reviewed == "yes":
        query = query.where(reviewed_rows)
    elif reviewed == "no":
        query = query.where(~reviewed_rows)
    return query


def filters_text(form: HistoryFilterForm) -> str:
    """The filters a list or export applied, as the audit trail gives them: "filters: verdict=NORMAL"."""
    return "filters: " + (", ".join(f"{name}={value}" for name, value in filter_args(form).items()) or "none")


def filter_args(form: HistoryFilterForm) -> dict[str, str]:
    """The active filters as query arguments, so pagination and export links keep them."""
    return {
        name: request_value
        for name, field in form._fields.items()
        if (request_value := field.raw_data[0] if field.raw_data else "").strip()
    }
