"""Instances sharing one Redis with settings that must agree (SECRET_KEY, model version, rate limits):
named in /readyz's warnings and in the job worker's log (webapp/jobs/agreement.py). Until 5 December a
replica started with another SECRET_KEY answered ready with no warning, while a session signed on one
replica sent its user back to sign in on the other and each replica allowed an account its own five
failed passwords (reproduced with two gunicorn replicas on one PostgreSQL and one Redis)."""

from __future__ import annotations

import ast
import logging
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis

import webapp
from tests.helpers import reset_database
from tests.redis_server import redis_server  # noqa: F401  (session fixture)
from webapp import create_app
from webapp.config import TestingConfig
from webapp.jobs import agreement
from webapp.jobs.queue import jobs

OTHER_KEY = "another-secret-key-of-more-than-32-characters"


@pytest.fixture
def replica(tmp_path, redis_server):  # noqa: F811
    """A factory of replicas on one database and one Redis, a queue name of their own (the Redis is shared
    by the whole test session)."""
    shared = {
        "INSTANCE_DIR": tmp_path,
        "REDIS_URL": redis_server.url,
        "JOBS_QUEUE_NAME": f"agreement-{uuid.uuid4().hex[:8]}",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
    }
    made = []

    def make(**overrides):
        app = create_app(TestingConfig, {**shared, **overrides})
        if not made:
            with app.app_context():
                reset_database()
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            from webapp.extensions import db

            db.engine.dispose()


def warnings_of(app) -> list[str]:
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    return response.json["warnings"]


def test_a_replica_with_another_secret_key_is_named_by_every_replica(replica, redis_server):  # noqa: F811
    first, same = replica(), replica()
    assert warnings_of(first) == [] and warnings_of(same) == []
    odd = replica(SECRET_KEY=OTHER_KEY)
    for app in (odd, first, same):
        [warning] = warnings_of(app)
        assert warning.startswith("settings differ between the instances sharing this Redis (REDIS_URL)")
        assert "SECRET_KEY (2 different keys)" in warning
    stored = b"".join(
        key + b"".join(fields)
        for key in redis.Redis.from_url(redis_server.url).keys("*settings*")
        for fields in [redis.Redis.from_url(redis_server.url).hkeys(key)]
    )
    assert OTHER_KEY.encode() not in stored and TestingConfig.SECRET_KEY.encode() not in stored


def test_replicas_holding_the_shared_counters_to_other_limits_are_named(replica):
    first = replica()
    assert warnings_of(first) == []
    replica(API_RATE_LIMIT="5/minute").test_client().get("/readyz")
    [warning] = warnings_of(first)
    assert "API_RATE_LIMIT ('20/second;600/minute', '5/minute')" in warning
    assert "SECRET_KEY" not in warning


def test_a_value_no_instance_runs_any_more_is_forgotten(replica):
    # A key rotated on every instance: the old one stops being seen, and stops being named.
    old, new = replica(), replica(SECRET_KEY=OTHER_KEY)
    with old.app_context():
        client = jobs().redis_client()
        assert agreement.disagreement(client, agreement.worker_settings("v1"), now=1000.0) is None
    with new.app_context():
        later = 1000.0 + agreement.WINDOW_SECONDS + 1
        assert "SECRET_KEY" in agreement.disagreement(client, agreement.worker_settings("v1"), now=1000.0 + 1)
        assert agreement.disagreement(client, agreement.worker_settings("v1"), now=later) is None


def test_a_replica_with_another_key_is_named_whatever_its_clock(replica, monkeypatch):
    """Found comparing the clocks that write and read the settings' "last seen": each instance stamped
    its settings by its own clock and judged the others' by it. A replica with another SECRET_KEY whose
    clock ran 10 minutes behind was "not seen for 10 minutes" on the others, its key forgotten and
    never named. They are stamped and judged by Redis's clock, the one every instance reads."""
    first = replica()
    assert warnings_of(first) == []
    behind = time.time() - 600
    with monkeypatch.context() as its_clock:
        its_clock.setattr(time, "time", lambda: behind)  # the whole process: that replica
        warnings_of(replica(SECRET_KEY=OTHER_KEY))
    [warning] = warnings_of(first)
    assert "SECRET_KEY (2 different keys)" in warning


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_the_job_worker_logs_a_model_other_than_the_replicas(replica, monkeypatch):
    app = replica()
    assert warnings_of(app) == []  # the replica recorded its model version
    worker = replica()
    monkeypatch.setattr(agreement, "worker_settings", lambda version: {"model version": "an-older-model"})
    kept = Kept()
    agreement.log.addHandler(kept)  # the app's JSON logging does not propagate to pytest's capture
    try:
        with worker.app_context():
            agreement.check_worker_settings()
    finally:
        agreement.log.removeHandler(kept)
    [record] = kept.records
    assert record.getMessage().startswith("jobs worker: settings differ")
    assert "model version (" in record.getMessage() and "'an-older-model'" in record.getMessage()
    monkeypatch.undo()
    assert "model version" in warnings_of(app)[0]


def test_the_agreement_task_is_scheduled_on_redis_only(replica, tmp_path):
    """On the embedded SQLite queue the every-minute task did nothing (no Redis to compare with) but put
    Huey's "Executing jobs.settings_agreement" lines in the worker's log every minute."""
    minute = datetime(2026, 12, 5, 6, 1)
    with replica().app_context():
        assert "jobs.settings_agreement" in {task.name for task in jobs().huey.read_periodic(minute)}
    alone = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path / "alone", "REDIS_URL": ""})
    with alone.app_context():
        due = {task.name for task in jobs().huey.read_periodic(minute)}
    assert "jobs.settings_agreement" not in due and "jobs.recover" in due


def test_only_the_dicom_node_hashes_uids_so_it_needs_no_part_in_the_check():
    """The DICOM node records no settings (agreement.py says why): the keyed hashes of UIDs it writes
    are made and matched by the node alone. Were any other process to compute one (a replica looking a
    film up by its UID, say), a node with another SECRET_KEY would silently fail to match, and the node
    would have to record its key like the worker does."""
    root = Path(webapp.__file__).parent
    uid_hashing = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            called = isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
            if called == "keyed_hash" and len(node.args) == 1 and not node.keywords:  # the "dicom-uid" purpose
                uid_hashing.add(path.relative_to(root).as_posix())
    assert uid_hashing == {"pacs/intake.py"}
