"""Leases on database rows: a job owns a row until its lease lapses.

A worker killed mid-job leaves its lease behind; once it lapses, the next job takes the row
over and finishes it, and the dead job's late writes (if it was only slow) are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import or_, update

from ..extensions import db
from ..models import utcnow


class LeaseLost(Exception):
    """Another job holds the row now (ours ran out while we were busy): stop without writing."""


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def lease() -> timedelta:
    return timedelta(seconds=current_app.config["JOBS_LEASE_SECONDS"])


def claim(model, row_id: int, state, claimable: tuple[str, ...], working: str, owner: str) -> bool:
    """Take the row for `owner` if its state is claimable and no live lease holds it; commits."""
    now = utcnow()
    result = db.session.execute(
        update(model)
        .where(
            model.id == row_id,
            state.in_(claimable),
            or_(model.lease_until.is_(None), model.lease_until < now),
        )
        .values({state.key: working, "lease_owner": owner, "lease_until": now + lease()})
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1
