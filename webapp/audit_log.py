"""Reading the audit trail: the query shared by the admin page and the API, and the page's filter form."""

from __future__ import annotations

from datetime import UTC, date, timedelta, tzinfo

from flask_wtf import FlaskForm
from sqlalchemy import Select, func, or_, select
from wtforms import DateField, StringField
from wtforms.validators import Length, Optional

from .date_range import not_before_date_from
from .extensions import db
from .local_time import day_bounds, display_zone
from .models import AuditEvent, User, folded_username, record_audit, utcnow
from .shell_actor import actor_is

# How long after an action the same form sent again is taken for a repeat, not a new request.
REPEAT_WINDOW = timedelta(minutes=10)


def done_moments_ago(actor: str, action: str, target: str) -> bool:
    """Whether `actor`'s trail holds `action` on `target` within REPEAT_WINDOW: with the same values
    found in place, the form now sent is that one again (a double-click's other POST, or the form
    re-sent from the back button), whose answer is the one the browser shows."""
    done = select(AuditEvent.id).where(
        AuditEvent.action == action,
        AuditEvent.actor == actor,
        AuditEvent.target == target,
        AuditEvent.created_at >= utcnow() - REPEAT_WINDOW,
    )
    return db.session.scalar(done.limit(1)) is not None


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    action = StringField("Action", validators=[Optional(), Length(max=64)])
    user = StringField("User", validators=[Optional(), Length(max=64)])
    target = StringField("Target", validators=[Optional(), Length(max=255)])
    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional(), not_before_date_from])


def audit_query(
    *,
    action: str | None = None,
    user: str | None = None,
    target: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    zone: tzinfo = UTC,
) -> Select:
    """Newest first, narrowed by action, user (the actor: `cli` is every shell command), target and
    days in `zone` (UTC for the API, the display zone on the page), both inclusive.

    The target is matched whole ("prediction 37" is not "prediction 371"): it is how an auditor answers
    "who opened this patient's film, and who exported or changed it", without reading the whole trail.

    Newest first in the order the rows were written (their ids), not by their times: each process
    (gunicorn workers, the job worker, replicas) stamps its rows by its own clock, and sorted by those a
    sign-in on a replica running 2 s ahead came after the film its session opened a second later."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action:
        query = query.where(AuditEvent.action == action.strip())
    if user:
        query = query.where(or_(*(actor_is(AuditEvent.actor, name) for name in _actor_names(user.strip()))))
    if target:
        query = query.where(AuditEvent.target == target.strip())
    start, end = day_bounds(date_from, date_to, zone)
    if start:
        query = query.where(AuditEvent.created_at >= start)
    if end:
        query = query.where(AuditEvent.created_at < end)
    return query


def _actor_names(user: str) -> set[str]:
    """The names `user` finds in the trail: itself, and the account it names compared as account names
    are (models.folded_username), as the history's user filter compares them. Until 5 December the
    trail matched the name exactly, so `dr.lee` (docs/api.md's example) found none of Dr.Lee's rows,
    nor `ALICE` any of alice's, and an auditor read an empty trail as "did nothing". Exact names, so
    the actor column's index still serves the filter."""
    account = select(User.username).where(func.lower(User.username) == folded_username(user))
    return {user, *db.session.scalars(account)}


def form_query(form: AuditFilterForm, upto: int) -> Select:
    """The page's query, up to event `upto`: the newest when the first page was read. Each page read
    is itself in the trail, at its top, so numbered pages of the growing trail slid by a row per read
    ("Older" began with the row that had ended the page before); the page links hold them still."""
    query = audit_query(
        action=form.action.data,
        user=form.user.data,
        target=form.target.data,
        date_from=form.date_from.data,
        date_to=form.date_to.data,
        zone=display_zone(),
    )
    return query.where(AuditEvent.id <= upto)


def newest_event() -> int:
    return db.session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))


def record_trail_viewed(actor: str, rows: int, filters: dict, page: int) -> None:
    """Reading the trail is in the trail, one row per page read on the admin page or the API, as each
    page of the history is: it names who opened which patient's film, and from where."""
    shown = ", ".join(f"{name}={value}" for name, value in filters.items() if value) or "none"
    record_audit(actor, "audit_viewed", f"{rows} rows", f"filters: {shown}; page={page}")
    db.session.commit()
