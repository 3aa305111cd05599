"""Leases on database rows: a job owns a row until its lease lapses.

A worker killed mid-job leaves its lease behind; once it lapses, the next job takes the row
over and finishes it, and the dead job's late writes (if it was only slow) are refused.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, and_, or_, update

from ..extensions import db
from ..models import as_utc, utcnow


class LeaseLost(Exception):
    """Another job holds the row now (ours ran out while we were busy): stop without writing."""


def job_owner() -> str:
    """The name a job holds its leases by: unique across hosts, worker processes and jobs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def seconds_left(lease_until: datetime) -> float:
    return (as_utc(lease_until) - utcnow()).total_seconds()


def lease() -> timedelta:
    return timedelta(seconds=current_app.config["JOBS_LEASE_SECONDS"])


def claim(model, row_id: int, state, claimable: tuple[str, ...], working: str, owner: str) -> bool:
    """Take the row for `owner` if its state is claimable and no live lease holds it (none, one given
    up, or one lapsed by this process's clock); commits."""
    now = utcnow()
    result = db.session.execute(
        update(model)
        .where(
            model.id == row_id,
            state.in_(claimable),
            or_(model.lease_owner.is_(None), model.lease_until.is_(None), model.lease_until < now),
        )
        .values({state.key: working, "lease_owner": owner, "lease_until": now + lease()})
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def lapsed(model, moment: datetime) -> ColumnElement[bool]:
    """Rows whose job stopped holding them (killed, or the database gone mid-job) with a lease that ran
    out before `moment`. Not a lease given up (give_up): its row's next job waits on the queue, behind
    others maybe. Taken for a dead job's, the recovery sweep queued a validation run again each minute
    its next slice waited, and /readyz called it stalled after 3 minutes."""
    return and_(model.lease_owner.is_not(None), model.lease_until < moment)


def give_up(model, row_id: int, owner: str) -> None:
    """End `owner`'s lease now, in the caller's transaction, for a job on any machine to claim at once.
    Its time says when (recovery and /readyz judge a lapse by it); no owner says it is free whatever
    the clocks: with this process's "now" alone, a worker on another machine whose clock ran behind by
    more than the moment between found it still held, and waited that much plus 2 s before it went on."""
    update_held(model, row_id, owner, lease_owner=None, lease_until=utcnow())


def left_to_recovery(model, row_id: int, owner: str) -> None:
    """A lease given up whose next job could not be queued (the queue down): `owner`'s again, lapsed
    as given up, in the caller's transaction, so that recovery and /readyz take it for a dead job's.
    Left free, no sweep queued it while other jobs waited (their messages on the queue), nor ever
    called it stalled. Not if a job has taken it meanwhile."""
    db.session.execute(
        update(model)
        .where(model.id == row_id, model.lease_owner.is_(None))
        .values(lease_owner=owner)
        .execution_options(synchronize_session=False)
    )


def update_held(model, row_id: int, owner: str, **values) -> None:
    """Write `values` to the row, in the caller's transaction, only while `owner` holds its lease: the
    ownership check and the write are one statement. Raises LeaseLost, having written nothing, otherwise."""
    result = db.session.execute(
        update(model)
        .where(model.id == row_id, model.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise LeaseLost


@contextmanager
def stop_if_lease_lost(log: logging.Logger, message: str, *args) -> Iterator[None]:
    """Around a job's work: when another job has taken the row over, roll back and log `message` as a
    warning instead of failing (the other job finishes the work)."""
    try:
        yield
    except LeaseLost:
        db.session.rollback()
        log.warning(message, *args)
