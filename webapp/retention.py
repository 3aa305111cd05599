"""Deleting predictions past a site's retention period (`flask --app wsgi predictions prune`).

A prediction is deleted with every row that belongs to it, found through the tables' foreign keys:
each table with a key into `predictions` (feedback, worklist reads, DICOM receipts), each table with
a key into one of those (DICOM results), and so on. So a new table that references a prediction is
deleted with it without a change here; only a table that names files on disk needs a line in FILES.
Rows are deleted with plain DELETE statements, a batch of predictions per transaction: no ORM object
is loaded, so the films' image columns are never read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Table, delete, exists, false, func, or_, select

from .extensions import db
from .models import RESULT_PENDING, DicomReceipt, DicomResult, Prediction, record_audit
from .pacs import spool
from .shell_actor import shell_actor

# Predictions deleted per transaction: a 100,000-row prune holds no long lock and no giant transaction.
BATCH_SIZE = 500

# Columns that name a file on disk, by table: the file goes once its row is deleted and committed.
# (A file left by a prune killed between the commit and the unlink is no row's: the job worker's
# recovery removes it, pacs/tasks.py remove_unnamed_files.)
FILES = {
    DicomReceipt.__table__: (spool.SPOOL, DicomReceipt.__table__.c.spool_name),
    DicomResult.__table__: (spool.OUTBOX, DicomResult.__table__.c.file_name),
}

# A prediction still in use is kept until a later prune: its result on the way to the PACS. The job
# delivering it reads the row and its file while it sends, and an administrator acts on a failed or
# refused one; a pending result is tried for a few hours at most (DICOM_SEND_MAX_ATTEMPTS).
IN_USE = exists(
    select(DicomResult.id)
    .join(DicomReceipt, DicomResult.receipt_id == DicomReceipt.id)
    .where(DicomReceipt.prediction_id == Prediction.id, DicomResult.state == RESULT_PENDING)
)


@dataclass
class Pruned:
    rows: Counter = field(default_factory=Counter)  # deleted rows by table name
    files: int = 0
    kept_in_use: int = 0


def dependent_tables() -> list[Table]:
    """Every table whose rows belong to a prediction, directly or through another such table,
    children before their parents (the order they can be deleted in)."""
    found: set[Table] = set()
    frontier = {Prediction.__table__}
    while frontier:
        frontier = {
            table
            for table in db.metadata.tables.values()
            if table not in found and any(key.column.table in frontier for key in table.foreign_keys)
        } - {Prediction.__table__}
        found |= frontier
    return [table for table in reversed(db.metadata.sorted_tables) if table in found]


def _doomed(table: Table, ids: list[int], owners: set[Table], memo: dict) -> ColumnElement[bool]:
    """The condition selecting the rows of `table` that belong to the predictions `ids`: rows with a
    key to a row of an owning table (`owners`) that belongs to them."""
    if table is Prediction.__table__:
        return table.c.id.in_(ids)
    if table not in memo:
        memo[table] = or_(
            false(),
            *(
                key.parent.in_(select(key.column).where(_doomed(key.column.table, ids, owners, memo)))
                for key in table.foreign_keys
                # A key into its own table (a row's parent row) needs nothing: the parent goes with its owner.
                if key.column.table in owners and key.column.table is not table
            ),
        )
    return memo[table]


def _belonging(ids: list[int]) -> Iterator[tuple[Table, ColumnElement[bool]]]:
    """Each table with the condition selecting its rows that belong to the predictions `ids`, children
    before their parents (the order they can be deleted in)."""
    tables = [*dependent_tables(), Prediction.__table__]
    owners, memo = set(tables), {}
    for table in tables:
        yield table, _doomed(table, ids, owners, memo)


def count_predictions(ids: list[int]) -> tuple[Counter, int]:
    """What delete_predictions(ids) would delete: the rows by table and the files, deleting nothing."""
    counts: Counter = Counter()
    files = 0
    for table, condition in _belonging(ids):
        counts[table.name] += db.session.scalar(select(func.count()).select_from(table).where(condition))
        if table in FILES:
            named = FILES[table][1].is_not(None)
            files += db.session.scalar(select(func.count()).select_from(table).where(condition, named))
    return counts, files


def delete_predictions(ids: list[int]) -> tuple[Counter, list[tuple[str, str]]]:
    """Delete the predictions `ids` and every row that belongs to them, in the caller's transaction.
    Returns the deleted rows by table and the files (kind, name) to remove once it is committed."""
    counts: Counter = Counter()
    files: list[tuple[str, str]] = []
    for table, condition in _belonging(ids):
        if table in FILES:
            kind, column = FILES[table]
            names = db.session.scalars(select(column).where(condition, column.is_not(None)))
            files.extend((kind, name) for name in names)
        counts[table.name] += db.session.execute(delete(table).where(condition)).rowcount
    return counts, files


def described(rows: Counter, files: int) -> str:
    """'with 3 feedback, 1 dicom_receipts and 1 file(s)': what went with the predictions."""
    belonging = ", ".join(f"{n} {table}" for table, n in sorted(rows.items()) if n and table != "predictions")
    return f"with {belonging or 'nothing else'} and {files} file(s)"


def prune_predictions(cutoff: datetime, period: str, batch_size: int = BATCH_SIZE) -> Pruned:
    """Delete the predictions made before `cutoff` that are not in use, a batch per transaction, each
    with its `predictions_pruned` audit row (`period` says which, e.g. "older than 365 days")."""
    pruned = Pruned()
    for ids in _batches(cutoff, batch_size):
        counts, files = delete_predictions(ids)
        # In the batch's own transaction: a prune that fails part-way leaves no deleted film untraced.
        what = f"{period} {described(counts, len(files))}"
        record_audit(shell_actor(), "predictions_pruned", f"{len(ids)} predictions", what)
        db.session.commit()
        pruned.rows.update(counts)
        for kind, name in files:
            spool.delete(kind, name)
        pruned.files += len(files)
    if not pruned.rows["predictions"]:  # a run that found nothing is in the trail too: the policy ran
        record_audit(shell_actor(), "predictions_pruned", "0 predictions", f"{period} {described(pruned.rows, 0)}")
        db.session.commit()
    pruned.kept_in_use = _kept_in_use(cutoff)
    return pruned


def count_prune(cutoff: datetime, batch_size: int = BATCH_SIZE) -> Pruned:
    """What prune_predictions(cutoff) would delete if it ran now (`predictions prune --dry-run`):
    the same batches, counted, not locked; nothing is deleted or written to the audit trail."""
    pruned = Pruned()
    for ids in _batches(cutoff, batch_size, lock=False):
        counts, files = count_predictions(ids)
        pruned.rows.update(counts)
        pruned.files += files
    pruned.kept_in_use = _kept_in_use(cutoff)
    return pruned


def _kept_in_use(cutoff: datetime) -> int:
    old = Prediction.created_at < cutoff
    return db.session.scalar(select(func.count()).select_from(Prediction).where(old, IN_USE))


def _batches(cutoff: datetime, batch_size: int, lock: bool = True) -> Iterator[list[int]]:
    last = 0
    while True:
        # Locked until the batch commits, so that no reading or worklist read is added to a film
        # while it is being deleted (PostgreSQL; SQLite has one writer at a time anyway).
        # (`lock` False: a count, which need not hold anyone up.)
        query = (
            select(Prediction.id)
            .where(Prediction.created_at < cutoff, Prediction.id > last, ~IN_USE)
            .order_by(Prediction.id)
            .limit(batch_size)
        )
        ids = list(db.session.scalars(query.with_for_update() if lock else query))
        if not ids:
            db.session.commit()
            return
        last = ids[-1]
        yield ids
