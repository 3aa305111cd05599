"""A film deleted by `flask predictions prune` while a request writes a row of it (a reading, a
worklist read): the request's write must go too, and the person is told why.

Found by the auditor's review (5 December): on PostgreSQL the write waited for the prune's batch,
then failed on the foreign key (a 500 for a reading); on SQLite, which checks no foreign key, it was
kept, a reading with its comment outliving the film it belonged to.
"""

from __future__ import annotations

from sqlalchemy import select

from .extensions import db
from .models import Prediction

FILM_PRUNED = (
    "This film was deleted while you had it open, past the site's retention period for screening "
    "results (flask predictions prune); nothing was saved for it."
)


def film_kept(prediction_id: int) -> bool:
    """Whether the film is still there, asked by a request that wrote a row belonging to it, after the
    write and before its commit (the row goes when it is not). On SQLite the write holds the
    database's one write lock, so this sees a prune committed meanwhile and none can follow before the
    commit; SQLite checks no foreign key, so the row of a pruned film was kept, outliving it. (On
    PostgreSQL the write's key check waits for a prune holding the film, then fails.)"""
    db.session.flush()
    return db.session.scalar(select(Prediction.id).where(Prediction.id == prediction_id)) is not None
