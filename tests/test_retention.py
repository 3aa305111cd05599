"""`flask --app wsgi predictions prune`: predictions past PREDICTION_RETENTION_DAYS go, with every row
and file that belongs to them; and `audit prune` also deletes lapsed sign-in counters."""

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from tests.factories import add_prediction
from webapp import retention
from webapp.extensions import db
from webapp.models import (
    RECEIPT_REFUSED,
    RECEIPT_SCREENED,
    RESULT_FAILED,
    RESULT_PENDING,
    RESULT_SENT,
    AuditEvent,
    DicomReceipt,
    DicomResult,
    Feedback,
    Prediction,
    SignInCounter,
    WorklistRead,
    utcnow,
)
from webapp.pacs import spool
from webapp.retention import dependent_tables, prune_predictions


def _film(user_id, days_old, *, reading=False, read=False, dicom=None):
    """A prediction `days_old` days old with what may belong to it; `dicom`: the states of its results,
    each with a file in the outbox (a sent one has none), and a leftover spooled film. Returns the
    prediction's id and the files that belong to it."""
    prediction_id = add_prediction(
        user_id, when=utcnow() - timedelta(days=days_old), feedback="NORMAL" if reading else None
    )
    files = []
    if read:
        db.session.add(WorklistRead(user_id=user_id, prediction_id=prediction_id))
    if dicom is not None:
        spool_name = spool.new_name()
        spool.write(spool.SPOOL, spool_name, b"film")
        files.append((spool.SPOOL, spool_name))
        receipt = DicomReceipt(
            sop_key=f"sop-{prediction_id}",
            study_key="study",
            calling_aet="PACS",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
            state=RECEIPT_SCREENED,
            prediction_id=prediction_id,
            spool_name=spool_name,
        )
        db.session.add(receipt)
        db.session.flush()
        for state in dicom:
            name = None if state == RESULT_SENT else spool.new_name()
            if name:
                spool.write(spool.OUTBOX, name, b"result")
                files.append((spool.OUTBOX, name))
            db.session.add(DicomResult(receipt_id=receipt.id, kind="SR", state=state, file_name=name))
    db.session.commit()
    return prediction_id, files


def _orphans() -> list[str]:
    """Rows whose foreign key names a row that is not there, in every table (SQLite does not check)."""
    found = []
    for table in db.metadata.sorted_tables:
        for key in table.foreign_keys:
            parent = key.column.table
            missing = (
                select(func.count())
                .select_from(table)
                .where(key.parent.is_not(None), key.parent.not_in(select(key.column).select_from(parent)))
            )
            if db.session.scalar(missing):
                found.append(f"{table.name}.{key.parent.name}")
    return found


def _exists(kind, name) -> bool:
    return (spool.location(kind) / name).is_file()


def test_prune_deletes_old_predictions_with_everything_that_belongs_to_them(app, runner, clinician_user):
    with app.app_context():
        old, old_files = _film(clinician_user, 400, reading=True, read=True, dicom=[RESULT_SENT, RESULT_FAILED])
        plain, _ = _film(clinician_user, 366)
        sending, sending_files = _film(None, 400, dicom=[RESULT_PENDING])
        new, new_files = _film(clinician_user, 10, reading=True, read=True, dicom=[RESULT_FAILED])
        # A film the PACS sent that was refused has no prediction: not this command's to delete.
        refused = DicomReceipt(
            sop_key="sop-refused", study_key="s", calling_aet="PACS", sop_class_uid="1.2", state=RECEIPT_REFUSED
        )
        db.session.add(refused)
        db.session.commit()

    result = runner.invoke(args=["predictions", "prune", "--days", "365"])

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [
        "Deleted 2 prediction(s) older than 365 days with 1 dicom_receipts, 2 dicom_results, 1 feedback, "
        "2 prediction_images, 1 worklist_reads and 2 file(s); 1 kept: a result still on its way to the PACS."
    ]
    with app.app_context():
        assert set(db.session.scalars(select(Prediction.id))) == {sending, new}
        assert {f.prediction_id for f in db.session.scalars(select(Feedback))} == {new}
        assert {r.prediction_id for r in db.session.scalars(select(WorklistRead))} == {new}
        receipts = {r.prediction_id for r in db.session.scalars(select(DicomReceipt))}
        assert receipts == {sending, new, None}
        assert db.session.scalar(select(func.count()).select_from(DicomResult)) == 2
        assert _orphans() == []
        assert not any(_exists(*f) for f in old_files)
        assert all(_exists(*f) for f in new_files + sending_files)
        (event_,) = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "predictions_pruned"))
        assert event_.actor == "cli:operator" and event_.target == "2 predictions"
        assert event_.details.startswith("older than 365 days (before ")
        assert "1 feedback" in event_.details and "2 file(s)" in event_.details
    assert plain != old


def _table_sizes() -> dict[str, int]:
    return {t.name: db.session.scalar(select(func.count()).select_from(t)) for t in db.metadata.sorted_tables}


def test_a_dry_run_counts_what_the_prune_would_delete_and_deletes_nothing(app, runner, clinician_user):
    with app.app_context():
        _, old_files = _film(clinician_user, 400, reading=True, read=True, dicom=[RESULT_SENT, RESULT_FAILED])
        _film(clinician_user, 366)
        _film(None, 400, dicom=[RESULT_PENDING])
        _, new_files = _film(clinician_user, 10, reading=True, read=True, dicom=[RESULT_FAILED])
        before = _table_sizes()
        # Batches of one film: the counts add up across batches as the deletions do.
        counted = retention.count_prune(utcnow() - timedelta(days=365), batch_size=1)
    belonging = (
        "2 prediction(s) older than 365 days with 1 dicom_receipts, 2 dicom_results, 1 feedback, "
        "2 prediction_images, 1 worklist_reads and 2 file(s); 1 kept: a result still on its way to the PACS."
    )

    dry = runner.invoke(args=["predictions", "prune", "--days", "365", "--dry-run"])

    assert dry.exit_code == 0, dry.output
    assert dry.output.strip().splitlines() == [f"Would delete (dry run: nothing was deleted) {belonging}"]
    with app.app_context():
        assert _table_sizes() == before  # not a row deleted, and no predictions_pruned event
        assert all(_exists(*f) for f in old_files + new_files)
    real = runner.invoke(args=["predictions", "prune", "--days", "365"])
    assert real.output.strip().splitlines() == [f"Deleted {belonging}"]
    assert (counted.rows["predictions"], counted.rows["feedback"], counted.files) == (2, 1, 2)


@pytest.mark.app_config(PREDICTION_RETENTION_DAYS=30)
def test_prune_takes_the_retention_period_from_the_setting(app, runner, clinician_user):
    with app.app_context():
        _film(clinician_user, 31, reading=True)
        kept, _ = _film(clinician_user, 29)
    result = runner.invoke(args=["predictions", "prune"])
    assert result.exit_code == 0 and "Deleted 1 prediction(s) older than 30 days with 1 feedback" in result.output
    with app.app_context():
        assert list(db.session.scalars(select(Prediction.id))) == [kept]


def test_prune_without_a_retention_period_refuses_and_deletes_nothing(app, runner, clinician_user):
    with app.app_context():
        _film(clinician_user, 5000)
    result = runner.invoke(args=["predictions", "prune"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: No retention period for predictions: set PREDICTION_RETENTION_DAYS or give --days N "
        "(without either, predictions are kept for ever)."
    )
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 1
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 0


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("0", "Invalid value for '--days': 0 is not in the range 1<=x<=36500."),
        ("100000000", "Invalid value for '--days': 100000000 is not in the range 1<=x<=36500."),
        ("ten", "Invalid value for '--days': 'ten' is not a valid integer range."),
    ],
)
def test_prune_refuses_a_bad_period(app, runner, clinician_user, days, message):
    with app.app_context():
        _film(clinician_user, 5000)
    result = runner.invoke(args=["predictions", "prune", "--days", days])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 1


def test_prune_works_in_batches_and_never_reads_the_images(app, clinician_user):
    statements, commits = [], []
    with app.app_context():
        for _ in range(5):
            _film(clinician_user, 100, reading=True)
        listeners = {
            "before_cursor_execute": lambda _conn, _cursor, statement, *_: statements.append(statement),
            "commit": lambda _conn: commits.append(1),
        }
        for name, listener in listeners.items():
            event.listen(db.engine, name, listener)
        try:
            pruned = prune_predictions(utcnow() - timedelta(days=50), "older than 50 days", batch_size=2)
        finally:
            for name, listener in listeners.items():
                event.remove(db.engine, name, listener)
        assert pruned.rows["predictions"] == 5 and pruned.rows["feedback"] == 5
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 0
    assert len(commits) >= 3  # batches of 2, 2 and 1, each its own transaction
    assert statements and not [s for s in statements if "review_png" in s or "heatmap_png" in s]


def test_each_batch_is_in_the_trail_in_its_own_transaction(app, clinician_user, monkeypatch):
    """A prune that fails part-way (here the third batch) leaves the batches it deleted audited: the
    audit row is written with each batch, not once at the end."""
    with app.app_context():
        for _ in range(5):
            _film(clinician_user, 100)
        deleting = retention.delete_predictions
        batches = []

        def failing_on_the_third(ids):
            batches.append(ids)
            if len(batches) == 3:
                raise RuntimeError("the database went away")
            return deleting(ids)

        monkeypatch.setattr(retention, "delete_predictions", failing_on_the_third)
        with pytest.raises(RuntimeError):
            prune_predictions(utcnow() - timedelta(days=50), "older than 50 days", batch_size=2)
        db.session.rollback()
        trail = db.session.scalars(
            select(AuditEvent.target).where(AuditEvent.action == "predictions_pruned").order_by(AuditEvent.id)
        ).all()
        assert trail == ["2 predictions", "2 predictions"]
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 1


def test_every_table_that_references_a_prediction_is_deleted_with_it(app):
    """Found through the foreign keys: a table added later (the films' images in their own table) is
    deleted with its prediction without a change to webapp/retention.py."""
    with app.app_context():
        names = [table.name for table in dependent_tables()]
    assert {"feedback", "worklist_reads", "dicom_receipts", "dicom_results"} <= set(names)
    assert names.index("dicom_results") < names.index("dicom_receipts")  # children first


def test_audit_prune_deletes_lapsed_sign_in_counters(app, runner):
    # A counter keeps a client address; one quiet for a whole window was only deleted at the next
    # granted sign-in try, so the last ones before a quiet spell stayed indefinitely.
    with app.app_context():
        window = timedelta(minutes=app.config["LOGIN_WINDOW_MINUTES"])
        db.session.add_all(
            [
                SignInCounter(key="addr:203.0.113.9", failures=3, last_failure_at=utcnow() - window * 2),
                SignInCounter(key="addr:198.51.100.7", failures=1, last_failure_at=utcnow()),
            ]
        )
        db.session.commit()
    result = runner.invoke(args=["audit", "prune"])
    assert result.exit_code == 0 and "and 1 lapsed sign-in counter(s)." in result.output
    with app.app_context():
        assert list(db.session.scalars(select(SignInCounter.key))) == ["addr:198.51.100.7"]
