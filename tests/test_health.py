import os
import shutil
import time
from unittest.mock import ANY

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from tests.helpers import app_with_model_file, reset_database
from tests.redis_server import free_port, redis_server  # noqa: F401  (session fixture)
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.health import routes as health_routes


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_with_model_and_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready" and response.json["model_version"]


@pytest.mark.parametrize("content", [None, b"this is not a keras file"])
def test_readyz_503_when_model_missing_or_corrupt(tmp_path, content, caplog):
    app = app_with_model_file(tmp_path, content)
    client = app.test_client()
    for _ in range(3):
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "model could not be loaded" in response.json["reasons"][0]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "model could not be loaded" in r.getMessage()]
    assert len(errors) == 1  # one clear error, not one per probe
    assert client.get("/healthz").status_code == 200


def test_readyz_503_when_the_instance_disk_is_nearly_full(client, monkeypatch):
    """A full disk answered every upload with a 503 while /readyz still said ready."""
    free = 10 * 1024 * 1024
    monkeypatch.setattr(health_routes.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, free))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["status"] == "unavailable"
    assert response.json["reasons"] == [
        f"disk nearly full: 10 MB free in the instance folder (INSTANCE_DIR), under {health_routes.MIN_FREE_MB} MB"
    ]
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_names_an_unreachable_queue_without_leaving_the_pool(tmp_path, redis_server):  # noqa: F811
    """Redis down was not mentioned at all; it is now, as a warning: screening needs no queue, and a
    Redis outage reaches every replica, so 503 would stop screening everywhere (health/routes.py)."""
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with app.app_context():
        reset_database()
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    assert time.monotonic() - started < 5
    assert response.status_code == 200 and response.json["status"] == "ready"
    assert response.json["warnings"] == ["job queue unreachable: Redis (REDIS_URL): ConnectionError"]
    reachable = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "REDIS_URL": redis_server.url})
    assert reachable.test_client().get("/readyz").json["warnings"] == []


@pytest.mark.parametrize("on_redis", [False, True])
def test_readyz_warns_while_jobs_wait_with_no_job_worker(tmp_path, redis_server, on_redis):  # noqa: F811
    """A worker that never started, or died, left validation runs and the PACS's films waiting while every
    replica answered ready with no warning (found with two replicas, a worker and Redis: all workers
    killed mid-run, the run showed "running 16 of 80" for as long as none was started)."""
    from webapp.jobs import queue as job_queue

    settings = {"INSTANCE_DIR": tmp_path, "JOBS_QUEUE_NAME": f"silent-{on_redis}-{time.monotonic_ns()}"}
    app = create_app(TestingConfig, {**settings, "REDIS_URL": redis_server.url if on_redis else None})
    with app.app_context():
        reset_database()
    client = app.test_client()
    assert client.get("/readyz").json["warnings"] == []  # nothing waits: no worker needed
    with app.app_context():
        job_queue.jobs().enqueue("validation.run", 123456)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["warnings"] == [
        "no job worker: 1 job(s) wait in the queue and a worker was never seen on this queue (validation runs and "
        "films from the PACS wait for one: start `flask --app wsgi jobs worker`)"
    ]
    # A worker runs a job (here the recovery sweep, as every idle worker does each minute): seen.
    worker_side = create_app(TestingConfig, {**settings, "REDIS_URL": redis_server.url if on_redis else None})
    with worker_side.app_context():
        job_queue.jobs()._in_app_context(lambda: None)()
    assert client.get("/readyz").json["warnings"] == []
    with worker_side.app_context():  # ... and then not for over three minutes
        job_queue.jobs().huey.put(job_queue.WORKER_SEEN, time.time() - job_queue.WORKER_SILENT_SECONDS - 60)
    assert "a worker was last seen 4 minutes ago" in client.get("/readyz").json["warnings"][0]
    with app.app_context():
        job_queue.jobs().huey.flush()


def test_a_worker_on_redis_is_seen_whatever_its_clock(tmp_path, redis_server, monkeypatch):  # noqa: F811
    """Found comparing the clocks that write and read "worker last seen": on Redis the job worker runs on
    another machine than the replicas, and it stamped its heartbeat by its own clock. A worker whose
    clock ran 5 minutes behind a replica's, taking jobs every second, was "last seen 5 minutes ago" on
    that replica's /readyz, "no job worker" (and one running 5 minutes ahead hid a dead worker for 5
    minutes more). The heartbeat is stamped and judged by Redis's clock, the one both read."""
    from webapp.jobs import queue as job_queue

    settings = {
        "INSTANCE_DIR": tmp_path,
        "JOBS_QUEUE_NAME": f"clock-{time.monotonic_ns()}",
        "REDIS_URL": redis_server.url,
    }
    app, worker_side = create_app(TestingConfig, settings), create_app(TestingConfig, settings)
    with app.app_context():
        reset_database()
        job_queue.jobs().enqueue("validation.run", 123456)  # a job waits: the warning is due if no worker is seen
    behind = time.time() - 300
    with monkeypatch.context() as worker_clock, worker_side.app_context():
        worker_clock.setattr(job_queue.time, "time", lambda: behind)
        job_queue.jobs()._in_app_context(lambda: None)()  # the worker runs a job
    try:
        assert app.test_client().get("/readyz").json["warnings"] == []
    finally:
        with app.app_context():
            job_queue.jobs().huey.flush()


def test_readyz_503_while_the_database_schema_is_behind(app, client):
    """A backup restored from before an upgrade, or a database no one migrated: /readyz said ready
    while every request failed on a missing column with 503 "try again in a minute"."""
    with app.app_context():
        downgrade(revision="-1")
    response = client.get("/readyz")
    assert response.status_code == 503
    [reason] = response.json["reasons"]
    assert reason.startswith("database schema is at revision ") and "run `flask --app wsgi db upgrade`" in reason
    with app.app_context():
        upgrade()
    assert client.get("/readyz").status_code == 200


def test_readyz_503_on_a_database_never_migrated(tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"  # the suite's PostgreSQL is migrated by other tests
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": empty})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    [reason] = response.json["reasons"]
    assert reason.startswith("database schema is at revision (none), this version needs ")
    assert reason.endswith(": run `flask --app wsgi db upgrade`")


def test_readyz_ready_on_a_schema_newer_than_the_code(app, client):
    """A later release's revision is not reported as a missing one (the schema is not behind). Whether the
    code works on that schema is another matter: 0010 took columns away, so the docs say to stop the old
    version before an upgrade (docs/deployment.md, Upgrading)."""
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = '9999_from_a_later_release'"))
        db.session.commit()
    assert client.get("/readyz").status_code == 200


def test_readyz_503_naming_an_instance_folder_that_is_gone(tmp_path):
    """Reproduced under gunicorn (PostgreSQL-like: the database elsewhere) with the instance folder moved
    away: /readyz answered 500 "Something went wrong on our side" and logged a FileNotFoundError."""
    folder = tmp_path / "instance"
    folder.mkdir()
    app = create_app(TestingConfig, {"INSTANCE_DIR": folder})
    with app.app_context():
        reset_database()
    folder.rmdir()
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["reasons"] == [f"instance folder (INSTANCE_DIR) unusable: {folder}: No such file or directory"]


def test_readyz_warns_of_work_stopped_mid_job_with_no_worker_to_take_it_over(app, client, admin_user):
    """Reproduced under gunicorn: the job worker SIGKILLed at film 32 of a 300-film run and not restarted.
    The run showed "running", 32/300, for good, and /readyz said ready with no warning: the dead job had
    taken the run's queue message, so no job waited and the no-worker warning never came."""
    from datetime import timedelta

    from webapp.models import RECEIPT_SCREENING, RUN_RUNNING, DicomReceipt, ValidationRun, utcnow

    with app.app_context():
        run = ValidationRun(created_by_id=admin_user, archive_name="site.zip", archive_sha256="0" * 64)
        run.status, run.lease_owner, run.lease_until = RUN_RUNNING, "dead-worker", utcnow() - timedelta(seconds=30)
        film = DicomReceipt(sop_key="k", study_key="s", calling_aet="MODALITY", sop_class_uid="1.2")
        film.state, film.lease_until = RECEIPT_SCREENING, utcnow() - timedelta(seconds=30)
        db.session.add_all([run, film])
        db.session.commit()
        assert client.get("/readyz").json["warnings"] == []  # a lease just lapsed: recovery takes it
        run.lease_until = film.lease_until = utcnow() - timedelta(minutes=4)
        db.session.commit()
        run_id = run.id
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json["status"] == "ready"
    assert response.json["warnings"] == [
        f"stalled jobs: validation run(s) {run_id} and 1 film(s) from the PACS stopped mid-job over 3 minutes ago "
        "and no job worker took them over (start `flask --app wsgi jobs worker`: they carry on where they stopped)"
    ]


def test_readyz_503_when_the_sqlite_database_cannot_be_written(tmp_path, monkeypatch):
    """An instance folder mounted read-only: every request answered 503 "attempt to write a readonly
    database" while /readyz said ready (found with a read-only bind mount under gunicorn)."""
    app = create_app(
        TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/cxr.sqlite"}
    )
    with app.app_context():
        reset_database()
    client = app.test_client()
    assert client.get("/readyz").json == {"status": "ready", "model_version": ANY, "warnings": []}
    real_access = os.access
    monkeypatch.setattr(
        health_routes.os,
        "access",
        lambda path, mode: False if str(path).startswith(str(tmp_path)) else real_access(path, mode),
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["reasons"] == [
        f"database not writable: {tmp_path}/cxr.sqlite or its folder is read-only or not this user's to write"
    ]
    assert response.json["warnings"] == [
        "instance folder (INSTANCE_DIR) not writable: validation archives and films from the PACS cannot be kept"
    ]
