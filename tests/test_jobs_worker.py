"""The real worker process on Redis: `flask --app wsgi jobs worker` takes a validation run from a
real Redis server, is SIGKILLed mid-run, and a new worker finishes it with every film processed
exactly once. (The same on the SQLite queue, under gunicorn: scripts/check_validation_run.py.)"""

from __future__ import annotations

import io
import signal
import sys
import time

from flask_migrate import upgrade

from tests.archives import labelled_films, zip_bytes
from tests.helpers import issue_token, item_states, make_user
from tests.live_app import LiveApp
from tests.redis_server import redis_server  # noqa: F401  (session fixture)
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import ITEM_DONE, ITEM_PENDING, RUN_DONE, ValidationRun

WORKER = [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"]
FILMS = 200


def start_worker(instance, redis_url: str, name: str) -> LiveApp:
    worker = LiveApp(name, instance_dir=instance, argv=WORKER, env={"REDIS_URL": redis_url, "JOBS_LEASE_SECONDS": "5"})
    worker.start()
    worker.wait_for_log("jobs worker ready", 1, timeout=240)
    return worker


def test_a_sigkilled_worker_is_replaced_and_the_run_finishes_once(tmp_path, redis_server):  # noqa: F811
    redis_server.flush()
    database = tmp_path / "cxr.sqlite"
    app = create_app(
        TestingConfig,
        {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}", "REDIS_URL": redis_server.url},
    )
    with app.app_context():
        upgrade()
    make_user(app, "admin", "admin")
    token = issue_token(app, "admin")
    response = app.test_client().post(
        "/api/v1/validation-runs",
        headers={"Authorization": f"Bearer {token}"},
        data={"archive": (io.BytesIO(zip_bytes(labelled_films(copies=FILMS // 4))), "site.zip")},
    )
    assert response.status_code == 202
    run_id = response.get_json()["id"]

    first = start_worker(tmp_path, redis_server.url, "worker-1")
    try:
        deadline = time.monotonic() + 240
        while item_states(app, run_id).get(ITEM_DONE, 0) < 32:
            assert time.monotonic() < deadline, first.log_tail()
            time.sleep(0.05)
        first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    killed_at = item_states(app, run_id)
    assert killed_at.get(ITEM_PENDING, 0) > 0, "the run finished before the worker could be killed"

    second = start_worker(tmp_path, redis_server.url, "worker-2")
    try:
        deadline = time.monotonic() + 240
        while True:
            with app.app_context():
                status = db.session.get(ValidationRun, run_id).status
                db.session.remove()
            if status == RUN_DONE:
                break
            assert time.monotonic() < deadline, second.log_tail()
            time.sleep(0.2)
    finally:
        second.stop(signal.SIGTERM)
    assert item_states(app, run_id) == {ITEM_DONE: FILMS}
    with app.app_context():
        assert db.session.get(ValidationRun, run_id).metrics["n"] == FILMS
        db.session.remove()
        db.engine.dispose()
