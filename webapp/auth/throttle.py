"""Sign-in throttling: too many recent failures per account or per client address lock sign-in."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, func, select

from ..extensions import db
from ..models import LoginAttempt, utcnow


def _window():
    return utcnow() - timedelta(minutes=current_app.config["LOGIN_WINDOW_MINUTES"])


def _failures(column, value) -> int:
    query = select(func.count()).select_from(LoginAttempt).where(column == value, LoginAttempt.created_at >= _window())
    return db.session.scalar(query) or 0


def locked_out(username: str, address: str) -> bool:
    cfg = current_app.config
    return (
        _failures(LoginAttempt.username, username) >= cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
        or _failures(LoginAttempt.address, address) >= cfg["LOGIN_MAX_FAILURES_PER_ADDRESS"]
    )


def record_failure(username: str, address: str) -> None:
    db.session.add(LoginAttempt(username=username, address=address))
    # Old rows are no longer evidence of anything; drop them as we go.
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < _window()))
    db.session.commit()


def clear_failures(username: str) -> None:
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.username == username))
    db.session.commit()
