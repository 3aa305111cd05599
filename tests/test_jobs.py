"""The job queue on both backends (SQLite in the instance folder, and a real Redis server): a
validation run goes through the queue's storage and a worker's execution, survives a dead
worker's lapsed lease without losing or double-counting a film, and is recovered when its
queue message is gone."""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from tests.archives import labelled_films, zip_bytes
from tests.helpers import drain, issue_token, item_states, make_user, reset_database
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.jobs.leases import LeaseLost
from webapp.jobs.queue import QUEUE_TIMEOUT_SECONDS, run_recoveries
from webapp.models import ITEM_DONE, ITEM_PENDING, RUN_DONE, RUN_RUNNING, ValidationItem, ValidationRun, utcnow
from webapp.validation import tasks


@pytest.fixture(params=["sqlite", "redis"])
def queue_app(request, tmp_path):
    overrides = {"INSTANCE_DIR": tmp_path}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        overrides["REDIS_URL"] = server.url
    app = create_app(TestingConfig, overrides)
    with app.app_context():
        reset_database()
    make_user(app, "admin", "admin")
    app.admin_token = issue_token(app, "admin")
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def upload(app, members) -> int:
    response = app.test_client().post(
        "/api/v1/validation-runs",
        headers={"Authorization": f"Bearer {app.admin_token}"},
        data={"archive": (io.BytesIO(zip_bytes(members)), "site.zip")},
    )
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "queued"
    return response.get_json()["id"]


def test_a_run_goes_through_the_queue(queue_app):
    run_id = upload(queue_app, labelled_films(copies=2))
    assert queue_app.extensions["jobs"].pending() == 1
    assert drain(queue_app) == 1
    with queue_app.app_context():
        run = db.session.get(ValidationRun, run_id)
        assert run.status == RUN_DONE and run.metrics["n"] == 8
        assert run.lease_owner is None
    assert item_states(queue_app, run_id) == {ITEM_DONE: 8}
    assert not (queue_app.config["INSTANCE_DIR"] / "validation" / f"run-{run_id}.zip").exists()


def test_a_dead_workers_run_is_finished_without_counting_a_film_twice(queue_app):
    run_id = upload(queue_app, labelled_films(copies=5))  # 20 films: more than one batch
    huey = queue_app.extensions["jobs"].huey
    queued_message = huey.dequeue()  # a worker took the message ...
    with queue_app.app_context():
        # ... claimed the run, processed the first batch, and was SIGKILLed before the next.
        assert tasks.claim(run_id, "dead-worker")
        first = db.session.scalars(
            select(ValidationItem.id).where(ValidationItem.run_id == run_id).order_by(ValidationItem.id).limit(16)
        ).all()
        db.session.execute(
            update(ValidationItem).where(ValidationItem.id.in_(first)).values(state=ITEM_DONE, p_pneumonia=0.5)
        )
        db.session.commit()
        # A replacement worker starts while the dead one's lease still runs: the job waits for it.
        assert run_recoveries(on_start=True) == 1
    del queued_message
    drain(queue_app)
    assert huey.scheduled_count() == 1
    assert item_states(queue_app, run_id) == {ITEM_DONE: 16, ITEM_PENDING: 4}
    with queue_app.app_context():
        db.session.execute(update(ValidationRun).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        # The lease has lapsed: the scheduler's periodic recovery puts the run back on the queue.
        assert run_recoveries() == 1
    drain(queue_app)
    assert item_states(queue_app, run_id) == {ITEM_DONE: 20}
    with queue_app.app_context():
        run = db.session.get(ValidationRun, run_id)
        assert run.status == RUN_DONE and run.metrics["n"] == 20
        # The 16 films the dead worker finished were not done again (their placeholder score stayed).
        kept = db.session.scalar(
            select(func.count()).where(ValidationItem.run_id == run_id, ValidationItem.p_pneumonia == 0.5)
        )
        assert kept == 16


def test_a_database_that_fails_mid_run_leaves_the_run_to_carry_on(queue_app, monkeypatch):
    """Reproduced under gunicorn and the worker: another process held SQLite's write lock for 9 s (past
    its 5 s wait) during a 300-film run, and the run ended failed for good, its error the driver's text
    and SQL, its archive deleted; a PostgreSQL restart takes the same path."""
    run_id = upload(queue_app, labelled_films(copies=5))  # 20 films: more than one batch
    real_renew, renewals = tasks.renew, []

    def locked_at_the_second_batch(run_id, owner):
        renewals.append(owner)
        if len(renewals) == 3:  # the run's start, its first batch, then its second
            raise OperationalError("UPDATE validation_runs ...", {}, Exception("database is locked"))
        real_renew(run_id, owner)

    monkeypatch.setattr(tasks, "renew", locked_at_the_second_batch)
    drain(queue_app)
    with queue_app.app_context():
        run = db.session.get(ValidationRun, run_id)
        assert run.status == RUN_RUNNING and run.error is None
    assert item_states(queue_app, run_id) == {ITEM_DONE: 16, ITEM_PENDING: 4}  # the failed batch rolled back
    assert (queue_app.config["INSTANCE_DIR"] / "validation" / f"run-{run_id}.zip").exists()
    with queue_app.app_context():
        db.session.execute(update(ValidationRun).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert run_recoveries() == 1  # the lease lapsed: the run is queued again
    drain(queue_app)
    assert item_states(queue_app, run_id) == {ITEM_DONE: 20}
    with queue_app.app_context():
        assert db.session.get(ValidationRun, run_id).status == RUN_DONE


def test_a_second_job_for_a_held_run_does_not_touch_it(queue_app):
    run_id = upload(queue_app, labelled_films())
    with queue_app.app_context():
        assert tasks.claim(run_id, "live-worker")
        assert not tasks.claim(run_id, "another-worker")
        tasks.run_validation(run_id)  # the job a duplicate message would run
        run = db.session.get(ValidationRun, run_id)
        assert run.status == RUN_RUNNING and run.lease_owner == "live-worker"
    assert item_states(queue_app, run_id) == {ITEM_PENDING: 4}


def test_a_job_that_lost_its_lease_writes_nothing(queue_app):
    run_id = upload(queue_app, labelled_films())
    with queue_app.app_context():
        assert tasks.claim(run_id, "slow-worker")
        db.session.execute(update(ValidationRun).values(lease_owner="the-next-worker"))
        db.session.commit()
        with pytest.raises(LeaseLost):
            tasks.process(run_id, "slow-worker")
        db.session.rollback()
    assert item_states(queue_app, run_id) == {ITEM_PENDING: 4}


def test_a_queued_run_whose_message_was_lost_is_recovered(queue_app):
    run_id = upload(queue_app, labelled_films())
    huey = queue_app.extensions["jobs"].huey
    assert huey.dequeue() is not None  # the message is gone, the run never started
    with queue_app.app_context():
        assert run_recoveries() == 1
    drain(queue_app)
    with queue_app.app_context():
        assert db.session.get(ValidationRun, run_id).status == RUN_DONE


def test_a_lost_message_is_recovered_beside_the_other_periodic_tasks(queue_app):
    """Reproduced on Redis under gunicorn and the worker: a run uploaded while Redis was down ("recovery
    will queue it") stayed queued after Redis came back, sweep after sweep. The scheduler queues the
    sweep with the other periodic tasks due that minute (on Redis settings_agreement, every minute), and
    the sweep took their messages for the lost run's."""
    run_id = upload(queue_app, labelled_films())
    huey = queue_app.extensions["jobs"].huey
    assert huey.dequeue() is not None  # the message is gone, the run never started
    for job in huey.read_periodic(datetime(2026, 12, 5, 8, 0)):  # what the scheduler does at 08:00
        huey.enqueue(job)
    drain(queue_app)  # the sweep runs first, then the other periodic tasks, then what it re-enqueued
    with queue_app.app_context():
        assert db.session.get(ValidationRun, run_id).status == RUN_DONE


def test_jobs_status_counts_waiting_jobs(queue_app):
    upload(queue_app, labelled_films())
    result = queue_app.test_cli_runner().invoke(args=["jobs", "status"])
    assert result.exit_code == 0 and "pending\t1" in result.output and "scheduled\t0" in result.output


@pytest.mark.parametrize("command", [["jobs", "status"], ["jobs", "worker"]])
def test_an_unreachable_queue_is_one_line_and_the_worker_does_not_start(tmp_path, command):
    # A worker on a Redis that is down said "jobs worker ready" and then logged two tracebacks a
    # second (4,000 lines in 45 s); `jobs status` ended in an 80-line traceback.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0"})
    result = app.test_cli_runner().invoke(args=command)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the job queue on Redis (REDIS_URL) cannot be reached: ")
    assert "Connection refused" in result.output and "s3cret" not in result.output
    assert "ready" not in result.output


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_a_worker_without_threads_is_refused(runner, monkeypatch, threads):
    """`jobs worker --threads 0` said "jobs worker ready (..., 0 thread(s))" and then ran no job at
    all: validation runs and films from the PACS waited in the queue for ever, without a word."""

    def started(_config):  # the worker's first step: reaching it means the option was taken
        raise RuntimeError("the worker started")

    monkeypatch.setattr("webapp.jobs.cli.destination_or_fail", started)
    result = runner.invoke(args=["jobs", "worker", "--threads", threads])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '--threads': {threads} is not in the range x>=1." in result.output


def test_a_worker_starts_though_its_recovery_sweep_fails(queue_app, monkeypatch, caplog):
    """Reproduced with INSTANCE_DIR on a full tmpfs and two films from the PACS waiting: `jobs worker`
    died at start with a 60-line traceback (its start-up sweep could not enqueue: "database or disk is
    full"), and under ./scripts/run.sh took gunicorn and the DICOM node down with it."""
    import sqlite3

    from webapp.jobs import cli as jobs_cli

    def disk_full(on_start=False):
        raise sqlite3.OperationalError("database or disk is full")

    started = []
    monkeypatch.setattr(jobs_cli, "run_recoveries", disk_full)
    monkeypatch.setattr(jobs_cli, "install_process_logging", lambda *filters: None)  # keeps pytest's logging
    monkeypatch.setattr(jobs_cli, "yield_cpu", lambda *settings: None)  # would renice the test process
    huey = queue_app.extensions["jobs"].huey
    consumer = type("Consumer", (), {"run": lambda self: started.append(1)})
    monkeypatch.setattr(huey, "create_consumer", lambda **options: consumer())
    monkeypatch.setattr(jobs_cli, "exit_at_once", lambda: None)  # would end the test process
    result = queue_app.test_cli_runner().invoke(args=["jobs", "worker"])
    assert result.exit_code == 0 and started, result.output
    assert "the recovery sweep at start failed (OperationalError: database or disk is full)" in caplog.text


def test_a_stopped_worker_exits_without_tearing_its_interpreter_down(queue_app, monkeypatch):
    """Found measuring `docker stop` on a busy host: after SIGTERM, Huey's consumer returned at once, and
    then tearing down an interpreter holding TensorFlow took 1.3 s on a quiet host and 14 s at the
    worker's nice 10 beside two CPU-bound processes, past docker's 10 s grace (killed: 137). The worker
    now ends through exit_at_once (connections closed, log flushed) once its consumer has stopped."""
    from webapp.jobs import cli as jobs_cli

    steps = []
    monkeypatch.setattr(jobs_cli, "install_process_logging", lambda *filters: None)
    monkeypatch.setattr(jobs_cli, "yield_cpu", lambda *settings: None)
    monkeypatch.setattr(jobs_cli, "exit_at_once", lambda: steps.append("exit at once"))
    huey = queue_app.extensions["jobs"].huey
    consumer = type("Consumer", (), {"run": lambda self: steps.append("consumer stopped")})
    monkeypatch.setattr(huey, "create_consumer", lambda **options: consumer())
    result = queue_app.test_cli_runner().invoke(args=["jobs", "worker"])
    assert result.exit_code == 0, result.output
    assert steps == ["consumer stopped", "exit at once"]


def test_enqueueing_on_a_stalled_redis_gives_up_within_the_queue_timeout(tmp_path):
    # Redis stalled (connection open, nothing answering): redis-py's default held whoever enqueued (a
    # web request creating a validation run, a film the PACS was sending) 5 s a call. The worker's
    # blocking read (BRPOP) must stay shorter than the timeout, or every idle read would fail.
    with RedisServer() as server:
        app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "REDIS_URL": server.url})
        queue = app.extensions["jobs"]
        assert queue.huey.storage.read_timeout < QUEUE_TIMEOUT_SECONDS - 1
        queue.huey.storage.conn.ping()  # connected before the stall: the wait is on a reply, not a connect
        with server.stalled():
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError), app.app_context():
                tasks.start(1)
            assert time.monotonic() - started < QUEUE_TIMEOUT_SECONDS + 1
        # Redis took the push when it woke: queued again by recovery, the run's lease keeps it to one job.
        assert queue.pending() == 1
