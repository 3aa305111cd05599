"""The migrations, not create_all(), build the schema, and they match the models."""

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import LargeBinary, event, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from tests.factories import add_prediction
from tests.helpers import AuthActions, csrf_token, reset_database
from webapp.extensions import db
from webapp.models import (
    DIRECTORY,
    LOCAL,
    NO_LOCAL_PASSWORD,
    ApiToken,
    AuditEvent,
    Prediction,
    PredictionImages,
    User,
    _token_digest,
)

TABLES = {
    "users",
    "api_tokens",
    "predictions",
    "prediction_images",
    "feedback",
    "sign_in_counters",
    "audit_events",
    "alembic_version",
}


def test_upgrade_from_empty_database(app):
    with app.app_context():
        reset_database()
        assert set(inspect(db.engine).get_table_names()) >= TABLES


def test_models_match_migrations(app):
    with app.app_context():
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        assert diff == []


def test_downgrade_then_upgrade(app):
    with app.app_context():
        downgrade(revision="base")
        assert not {"users", "predictions"} & set(inspect(db.engine).get_table_names())
        upgrade()
        assert set(inspect(db.engine).get_table_names()) >= TABLES


def _directory_account(name: str) -> User:
    """A row as directory sign-in made it (before it refused the reserved name), with an API token."""
    user = User(username=name, role="clinician", source=DIRECTORY, password_hash=NO_LOCAL_PASSWORD)
    db.session.add(user)
    db.session.flush()
    user.secret = f"{name}-token-secret"
    token = {
        "user_id": user.id,
        "token_digest": _token_digest(user.secret),
        "expires_at": datetime(2100, 1, 1, tzinfo=UTC),
    }
    db.session.execute(insert(ApiToken.__table__).values(token))
    db.session.commit()
    return user


def _signed_in_browser(app, user: User):
    """A browser holding a session of that account, started before the upgrade (as a local account
    for the moment of the sign-in: directory sign-in refuses the name now)."""
    password = "a-long-enough-test-passphrase"
    user.source = LOCAL
    user.set_password(password)
    db.session.commit()
    browser = app.test_client()
    assert AuthActions(browser).login(user.username, password).status_code == 302
    user.source, user.password_hash = DIRECTORY, NO_LOCAL_PASSWORD
    db.session.commit()
    return browser


def test_the_upgrade_deactivates_a_directory_account_named_pacs(app, client, auth, runner, admin_user):
    """Found by the PACS review: directory sign-in refuses an entry named pacs (PACS is the user every
    film from the PACS shows), but a row it made before that fix kept its sessions and tokens, and its
    uploads went on passing for the PACS's. Migration 0008 ends it; other accounts are untouched."""
    # Made with this code's models, then taken back to 0007 with them (the app cannot run on a schema
    # that old: its models have later columns, such as 0015's users.directory_entry_id). Directory
    # sign-in on (never asked here): with it off both accounts would be refused anyway (User.cut_off).
    app.config["LDAP_URL"] = "ldap://127.0.0.1:9"
    with app.app_context():
        pacs, alice = _directory_account("pacs"), _directory_account("alice")
        pacs_id, pacs_secret, alice_secret = pacs.id, pacs.secret, alice.secret
        browser = _signed_in_browser(app, pacs)

    def api(secret: str) -> int:
        return client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {secret}"}).status_code

    assert browser.get("/screen").status_code == 200
    with app.app_context():
        downgrade(revision="0007_directory_access")
        upgrade()
        pacs = db.session.get(User, pacs_id)
        assert (pacs.active, pacs.directory_access, pacs.session_version) == (False, False, 1)
        trail = db.session.execute(select(AuditEvent.actor, AuditEvent.action, AuditEvent.target)).all()
        assert {("migration", "user_deactivated", "pacs"), ("migration", "token_revoked", "pacs")} <= set(trail)
        assert User.by_username("alice").active
    assert (api(pacs_secret), api(alice_secret)) == (401, 200)
    assert browser.get("/screen").status_code == 302
    # Neither the Users page nor the CLI turns it back on.
    auth.login("admin")
    page = client.post(
        f"/admin/users/{pacs_id}/active",
        data={"csrf_token": csrf_token(client, "/admin/users"), "active": "1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "reserved for films from the PACS" in page
    result = runner.invoke(args=["users", "activate", "pacs"])
    assert result.exit_code != 0 and "reserved for films from the PACS" in result.output
    with app.app_context():
        assert not db.session.get(User, pacs_id).active


def test_counters_keyed_on_a_typed_name_in_clear_are_dropped(app):
    # Until 0009 the per-account counter's key held the name as typed, which may be a password.
    with app.app_context():
        downgrade(revision="0008_reserved_name")
        for key in ("pair:hunter2-typed-as-name|10.0.0.1", "addr:10.0.0.1"):
            db.session.execute(
                text("INSERT INTO sign_in_counters (key, failures, last_failure_at) VALUES (:key, 3, :at)"),
                {"key": key, "at": datetime(2026, 12, 1, tzinfo=UTC)},
            )
        db.session.commit()
        upgrade()
        assert db.session.scalars(text("SELECT key FROM sign_in_counters")).all() == ["addr:10.0.0.1"]


REVIEW, HEATMAP = b"review-copy" * 5000, b"heat-map" * 500


def _film_before_0010(conn) -> None:
    """One user and one prediction, written as revision 0009 stores them: the images in the row."""
    conn.execute(
        text(
            "INSERT INTO users (id, username, password_hash, role, active, created_at)"
            " VALUES (1, 'u', 'x', 'admin', :t, :now)"
        ),
        {"t": True, "now": datetime.now(UTC)},
    )
    columns = {
        "id": 7,
        "created_at": datetime.now(UTC),
        "user_id": 1,
        "source": "upload",
        "filename": "f",
        "sha256": "0" * 64,
        "image_format": "JPEG",
        "file_size": 1,
        "width": 1,
        "height": 1,
        "label": "NORMAL",
        "p_normal": 0.9,
        "p_pneumonia": 0.1,
        "threshold": 0.5,
        "model_version": "v",
        "latency_ms": 1.0,
        "facts": "{}",
        "review_png": REVIEW,
        "heatmap_png": HEATMAP,
    }
    names = ", ".join(columns)
    conn.execute(text(f"INSERT INTO predictions ({names}) VALUES ({', '.join(':' + n for n in columns)})"), columns)


def test_images_move_to_their_own_table_and_back(app):
    # SQLite keeps a row's columns in order, and predictions' later columns sat behind each row's
    # images: the monitoring page walked every image. 0010 moves them out, data and all.
    with app.app_context():
        downgrade(revision="0009_sign_in_counter_names")
        with db.engine.begin() as conn:
            _film_before_0010(conn)
        upgrade()
        assert "review_png" not in {c["name"] for c in inspect(db.engine).get_columns("predictions")}
        with db.engine.connect() as conn:
            moved = conn.execute(text("SELECT prediction_id, review_png, heatmap_png FROM prediction_images")).all()
        assert [tuple(row) for row in moved] == [(7, REVIEW, HEATMAP)]
        assert db.session.get(Prediction, 7).images.review_png == REVIEW
        db.session.remove()

        downgrade(revision="0009_sign_in_counter_names")
        assert "prediction_images" not in inspect(db.engine).get_table_names()
        with db.engine.connect() as conn:
            back = conn.execute(text("SELECT id, review_png, heatmap_png FROM predictions")).all()
        assert [tuple(row) for row in back] == [(7, REVIEW, HEATMAP)]
        upgrade()


def test_a_predictions_images_go_with_it(app):
    with app.app_context():
        # In the database (PostgreSQL enforces it; SQLite leaves foreign keys off) ...
        (key,) = inspect(db.engine).get_foreign_keys("prediction_images")
        assert key["referred_table"] == "predictions" and key["options"].get("ondelete") == "CASCADE"
        # ... and in the ORM, which is what removes them on SQLite.
        prediction_id = add_prediction(None)
        db.session.delete(db.session.get(Prediction, prediction_id))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(PredictionImages)) == 0


def test_the_predictions_table_holds_no_images():
    # Any image column here would again sit in front of the columns later migrations add.
    assert not [c.name for c in Prediction.__table__.columns if isinstance(c.type, LargeBinary)]


def test_operating_points_left_in_force_together_are_reduced_to_the_applied_one(app, admin_user):
    # Until 0011 two adoptions at the same moment could both stay in force; the app applied the latest.
    with app.app_context():
        downgrade(revision="0010_prediction_images")
        db.session.execute(
            text(
                "INSERT INTO validation_runs (id, created_at, created_by_id, archive_name, archive_sha256, status) "
                "VALUES (1, :at, :admin, 'a.zip', '', 'done')"
            ),
            {"at": datetime(2026, 12, 1, tzinfo=UTC), "admin": admin_user},
        )
        for calibration_id, version, day in ((1, "v1", 1), (2, "v1", 2), (3, "v1", 3), (4, "v2", 1)):
            db.session.execute(
                text(
                    "INSERT INTO site_calibrations (id, created_at, validation_run_id, model_version, threshold, "
                    "reason, adopted_by_id) VALUES (:id, :at, 1, :version, 0.5, 'r', :admin)"
                ),
                {
                    "id": calibration_id,
                    "version": version,
                    "admin": admin_user,
                    "at": datetime(2026, 12, day, tzinfo=UTC),
                },
            )
        db.session.commit()
        upgrade()
        rows = db.session.execute(text("SELECT id, withdrawn_at IS NULL FROM site_calibrations ORDER BY id")).all()
        assert [(row[0], bool(row[1])) for row in rows] == [(1, False), (2, False), (3, True), (4, True)]


def test_names_differing_only_in_case_are_kept_and_no_new_one_can_join_them(app, admin_user, capsys):
    """Until 0013 only the app's check kept "Alice" from beside "alice" (two created at once both
    passed it); the database refuses that now. Accounts that already differ only in case (made before
    that check, or by directory sign-in until 4 December) are kept and named in a warning, not merged,
    renamed or allowed to stop the upgrade, and their name stays taken in every case."""
    with app.app_context():
        downgrade(revision="0012_token_form_once")
        for name in ("Clin", "clin", "CLIN", "other"):
            _user_row(name)
        upgrade()  # logs through alembic.ini's console handler (it replaces the handlers pytest adds)
        assert [u.username for u in db.session.scalars(select(User).order_by(User.id))] == [
            "admin",
            "Clin",
            "clin",
            "CLIN",
            "other",
        ]
        warned = [line for line in capsys.readouterr().err.splitlines() if "differs only in case" in line]
        assert len(warned) == 2 and all("'Clin'" in line for line in warned)
        for name in ("cLin", "Other", "ADMIN"):
            _user_row(name, expect_refused=True)
        _user_row("new.doc")
        downgrade(revision="0012_token_form_once")  # and up again, those rows in place
        upgrade()
        _user_row("CLIN.")
        _user_row("Clin.", expect_refused=True)


def _user_row(name: str, expect_refused: bool = False) -> None:
    # Written with the columns given (and their defaults), not the model's: at 0012 the table lacks
    # later ones (0015's directory_entry_id).
    row = insert(User.__table__).values(username=name, role="clinician", password_hash="x")
    if expect_refused:
        with pytest.raises(IntegrityError):
            db.session.execute(row)
        db.session.rollback()
    else:
        db.session.execute(row)
        db.session.commit()


class UpgradeCutShort(Exception):
    """Not a RuntimeError: flask_migrate turns those into a log line and exit status 1."""


def test_an_upgrade_cut_short_changes_nothing_and_can_be_run_again(app):
    """On SQLite each statement of a migration outside a DML transaction committed by itself: an upgrade
    stopped after 0010's CREATE TABLE (the old app's write holding the lock: 'database is locked', found
    upgrading a release at 0008 while it still ran) left prediction_images behind with the revision still
    at 0009, and every `db upgrade` after that failed with 'table prediction_images already exists'.
    An upgrade is now one transaction: stopped anywhere, it leaves the schema as it was."""
    with app.app_context():
        downgrade(revision="0009_sign_in_counter_names")
        with db.engine.begin() as conn:
            _film_before_0010(conn)

        def stop_after_create(_conn, _cursor, statement, *_args):
            if statement.lstrip().startswith("CREATE TABLE prediction_images"):
                raise UpgradeCutShort

        event.listen(db.engine, "after_cursor_execute", stop_after_create)
        try:
            with pytest.raises(UpgradeCutShort):
                upgrade()
        finally:
            event.remove(db.engine, "after_cursor_execute", stop_after_create)
        with db.engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0009_sign_in_counter_names"
        assert "prediction_images" not in inspect(db.engine).get_table_names()

        upgrade()
        assert db.session.get(Prediction, 7).images.review_png == REVIEW
        db.session.remove()


def _outbox_before_0014(conn) -> None:
    """Results as 0013 kept them: the PACS's aborts in a row stated only at the end of the last error."""
    now = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    conn.execute(
        text(
            "INSERT INTO dicom_receipts (id, received_at, sop_key, study_key, calling_aet, sop_class_uid, modality,"
            " state, copies) VALUES (1, :now, :key, :key, 'MODALITY', '1.2.840.10008.5.1.4.1.1.1', 'CR', 'screened', 1)"
        ),
        {"now": now, "key": "a" * 64},
    )
    aborted = "PACS@pacs:4242 accepted the association and then aborted the C-STORE without a status"
    rows = [
        (1, "pending", f"{aborted} (aborted 2 of 3 tries in a row before it is taken as a refusal)"),
        (2, "pending", "PACS@pacs:4242 cannot be reached (connection refused)"),
        (3, "refused", f"{aborted} (aborted 3 tries in a row; not tried again)"),
        (4, "pending", None),
    ]
    for result_id, state, last_error in rows:
        conn.execute(
            text(
                "INSERT INTO dicom_results (id, receipt_id, kind, created_at, state, attempts, next_attempt_at,"
                " last_error) VALUES (:id, 1, 'SR', :now, :state, 2, :now, :error)"
            ),
            {"id": result_id, "now": now, "state": state, "error": last_error},
        )


def test_the_aborts_in_a_row_move_from_the_last_error_to_a_column(app):
    # The count was parsed out of the last error (cut to 500 characters: a long PACS address cut the
    # count off). 0014 gives it a column and carries the count of a result waiting to be tried again.
    with app.app_context():
        downgrade(revision="0013_username_case")
        with db.engine.begin() as conn:
            _outbox_before_0014(conn)
        upgrade()
        with db.engine.connect() as conn:
            counts = conn.execute(text("SELECT id, aborts_in_a_row FROM dicom_results ORDER BY id")).all()
        assert [tuple(row) for row in counts] == [(1, 2), (2, 0), (3, 0), (4, 0)]

        downgrade(revision="0013_username_case")
        assert "aborts_in_a_row" not in {c["name"] for c in inspect(db.engine).get_columns("dicom_results")}
        with db.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM dicom_results")) == 4
        upgrade()


def test_directory_accounts_keep_their_rows_and_await_their_entrys_identity(app):
    # 0015 keeps the directory entry's objectGUID / entryUUID; a migration cannot ask the directory, so an
    # existing account has none until its next sign-in or re-check records it (tests/test_directory_identity.py).
    with app.app_context():
        downgrade(revision="0014_outbox_abort_count")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, active, theme, created_at, source,"
                    " session_version, must_change_password, directory_access) VALUES ('alice', :hash,"
                    " 'clinician', :yes, 'system', :now, :source, 3, :no, :yes)"
                ),
                {
                    "hash": NO_LOCAL_PASSWORD,
                    "now": datetime(2026, 12, 5, tzinfo=UTC),
                    "source": DIRECTORY,
                    "yes": True,
                    "no": False,
                },
            )
        upgrade()
        alice = User.by_username("alice")
        assert (alice.source, alice.session_version, alice.directory_entry_id) == (DIRECTORY, 3, None)
        alice.directory_entry_id = "00112233-4455-6677-8899-aabbccddeeff"
        db.session.commit()
        db.session.remove()

        downgrade(revision="0014_outbox_abort_count")
        assert "directory_entry_id" not in {c["name"] for c in inspect(db.engine).get_columns("users")}
        with db.engine.connect() as conn:
            assert conn.scalar(text("SELECT username FROM users")) == "alice"
        upgrade()
