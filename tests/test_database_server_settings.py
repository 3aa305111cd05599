"""A PostgreSQL server configured the way a hospital's DBA configures it, not the way our test cluster
starts: a database that takes no writes (a standby after a failover, `default_transaction_read_only`),
a session the server ends. Each is "the database is not available" (503, nothing half-written, one log
line), never a 500 "something went wrong". Run on PostgreSQL (TEST_DATABASE_URL, scripts/with_postgres.sh).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text

from tests.archives import labelled_films, zip_bytes
from tests.dicom_films import film, store
from tests.factories import add_prediction
from tests.helpers import api_upload, drain, fixture_image
from webapp.extensions import db
from webapp.models import RECEIPT_SCREENED, DicomReceipt, Prediction, ValidationRun
from webapp.screening import service

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="PostgreSQL's server settings; SQLite has none",
)


def server_settings(app, monkeypatch, options: str) -> None:
    """New connections open with `options` (libpq's PGOPTIONS), as when postgresql.conf, ALTER DATABASE
    or ALTER ROLE set them; the pool is emptied so that no request finds a connection opened before."""
    monkeypatch.setenv("PGOPTIONS", options)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def slowed(monkeypatch, owner, name: str, seconds: float):
    """`owner.name` made `seconds` slower, as on a busy host; returns the original."""
    original = getattr(owner, name)

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    return original


def predictions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Prediction))


def test_a_server_that_takes_no_writes_is_unavailable_not_a_fault(
    app, client, clinician_user, api_token, monkeypatch, caplog
):
    with app.app_context():
        prediction_id = add_prediction(clinician_user)
    before = predictions(app)
    server_settings(app, monkeypatch, "-c default_transaction_read_only=on")

    upload = api_upload(client, api_token, ("a.jpeg", fixture_image("normal.jpeg")))
    assert upload.status_code == 503 and upload.json["error"]["code"] == "database_unavailable"
    # Reading a prediction records the view in the audit trail: refused the same way.
    read = client.get(f"/api/v1/predictions/{prediction_id}", headers={"Authorization": f"Bearer {api_token}"})
    assert read.status_code == 503 and read.json["error"]["code"] == "database_unavailable"
    assert "unhandled error" not in caplog.text
    assert "ReadOnlySqlTransaction" in caplog.text

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert any("the PostgreSQL server takes no writes" in reason for reason in ready.json["reasons"])

    server_settings(app, monkeypatch, "")
    assert predictions(app) == before
    assert client.get("/readyz").status_code == 200


def test_a_session_the_server_ends_while_a_film_is_screened_is_unavailable(app, client, api_token, monkeypatch, caplog):
    # The request's transaction (its token read) stays open while the film is decoded and screened; a
    # DBA's idle_in_transaction_session_timeout shorter than that ends the session under it. (A token's
    # first use commits its last-use time before the film is read: the second upload is the one.)
    assert api_upload(client, api_token, ("a.jpeg", fixture_image("normal.jpeg"))).status_code == 201
    server_settings(app, monkeypatch, "-c idle_in_transaction_session_timeout=100")
    decode = slowed(monkeypatch, service, "decode", 0.5)  # a forward pass on a busy host
    before = predictions(app)
    upload = api_upload(client, api_token, ("a.jpeg", fixture_image("normal.jpeg")))
    assert upload.status_code == 503 and upload.json["error"]["code"] == "database_unavailable"
    assert "IdleInTransactionSessionTimeout" in caplog.text and "Traceback" not in caplog.text
    assert predictions(app) == before

    monkeypatch.setattr(service, "decode", decode)
    server_settings(app, monkeypatch, "")  # a film screened at full speed on a busy host may take 100 ms too
    assert api_upload(client, api_token, ("a.jpeg", fixture_image("normal.jpeg"))).status_code == 201


def test_migrating_replicas_take_turns_whatever_the_servers_timeouts(app, monkeypatch):
    # docker/migrate.py holds an advisory lock while `flask db upgrade` runs, so replicas take turns. With
    # a DBA's statement_timeout the wait for another replica's turn was cancelled, and with an
    # idle_in_transaction_session_timeout shorter than an upgrade the session holding the lock was ended
    # mid-upgrade: the lock went to the next replica and the start failed with a traceback.
    from docker.migrate import MIGRATION_LOCK_KEY

    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 40,
        "INSTANCE_DIR": str(app.config["INSTANCE_DIR"]),
        "DATABASE_URL": os.environ["TEST_DATABASE_URL"],
        "PYTHONPATH": str(root),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PGOPTIONS": "-c statement_timeout=300 -c idle_in_transaction_session_timeout=300",
    }
    with psycopg.connect(os.environ["TEST_DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))  # another replica migrating
        start = subprocess.Popen(
            [sys.executable, "docker/migrate.py"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        time.sleep(1.5)
        assert start.poll() is None, start.communicate()[0].decode()[-2000:]  # still waiting its turn
        other.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    output = start.communicate(timeout=120)[0].decode()
    assert start.returncode == 0 and "Traceback" not in output, output[-3000:]


def test_a_validation_run_holds_no_transaction_open_while_its_films_are_screened(
    app, client, admin_token, monkeypatch, caplog
):
    # A batch of 16 films at the worker's low priority takes seconds; the batch's read of its pending films
    # kept its transaction open meanwhile, so a DBA's idle_in_transaction_session_timeout shorter than that
    # ended the session at every batch: the run waited, was taken up again, and never finished.
    from webapp.validation import tasks

    archive = zip_bytes(labelled_films(copies=1))
    response = client.post(
        "/api/v1/validation-runs",
        headers={"Authorization": f"Bearer {admin_token}"},
        data={"archive": (io.BytesIO(archive), "site.zip")},
    )
    assert response.status_code == 202
    server_settings(app, monkeypatch, "-c idle_in_transaction_session_timeout=300")
    slowed(monkeypatch, tasks, "analyse_batch", 0.6)  # a batch on a busy host
    drain(app)
    with app.app_context():
        run = db.session.get(ValidationRun, response.json["id"])
        assert run.status == "done", caplog.text[-2000:]
    assert "IdleInTransactionSessionTimeout" not in caplog.text


def test_a_film_from_the_pacs_holds_no_transaction_open_while_it_is_screened(app, dicom_port, monkeypatch, caplog):
    from webapp.pacs import tasks

    assert store(dicom_port, [film(1)]) == [0x0000]
    server_settings(app, monkeypatch, "-c idle_in_transaction_session_timeout=300")
    slowed(monkeypatch, tasks, "analyse", 0.6)  # a large film on a busy host
    drain(app)
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_SCREENED, caplog.text[-2000:]
    assert "IdleInTransactionSessionTimeout" not in caplog.text


def test_a_privilege_the_dba_withheld_is_unavailable_not_a_fault(app, client, api_token, monkeypatch, caplog):
    # Hardening guides give the app's role only the privileges it is thought to need, or make tables
    # append-only; until 5 December the first request that needed a withheld one answered 500 "something
    # went wrong" with a traceback. The suite's role is a superuser, which no privilege binds: the app's
    # sessions take a role of this test's own (libpq's `-c role=`).
    grants = [
        "CREATE ROLE cxr_limited NOLOGIN",
        "GRANT USAGE ON SCHEMA public TO cxr_limited",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO cxr_limited",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO cxr_limited",
        "REVOKE INSERT ON predictions FROM cxr_limited",
    ]
    with app.app_context():
        for statement in grants:
            db.session.execute(text(statement))
        db.session.commit()
    try:
        server_settings(app, monkeypatch, "-c role=cxr_limited")
        upload = api_upload(client, api_token, ("a.jpeg", fixture_image("normal.jpeg")))
        assert upload.status_code == 503 and upload.json["error"]["code"] == "database_unavailable"
        assert "InsufficientPrivilege: permission denied for table predictions" in caplog.text
        assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text
    finally:
        server_settings(app, monkeypatch, "")
        with app.app_context():
            db.session.execute(text("DROP OWNED BY cxr_limited"))
            db.session.execute(text("DROP ROLE cxr_limited"))
            db.session.commit()
