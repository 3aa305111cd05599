"""The app behind pgbouncer, the connection pooler hospitals put in front of PostgreSQL (docs/deployment.md).
In transaction pooling each transaction may run on a different server connection, so nothing may rely on
a session's state outliving its transaction. Run on PostgreSQL (TEST_DATABASE_URL, scripts/with_postgres.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.helpers import api_upload, fixture_image, reset_database
from tests.pgbouncer_server import PgBouncer
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="a PostgreSQL connection pooler",
)


@pytest.fixture
def pooler():
    server = PgBouncer(os.environ["TEST_DATABASE_URL"], "transaction")
    yield server
    server.stop()


@pytest.fixture
def app(pooler, tmp_path):
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": pooler.url})
    with app.app_context():
        reset_database()  # the migrations, through the pooler
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_app_works_behind_a_transaction_pooler(pooler, app, client, clinician_user, api_token):
    # psycopg prepares a statement on the server once it has run five times on a connection (an upload of
    # several films, a job worker's loop); behind a transaction pooler a later transaction ran on another
    # server connection, which had no such statement ("prepared statement "_pg3_0" does not exist"; or
    # "already exists" where another client had prepared one): films refused as screening_failed (207),
    # jobs that failed.
    films = [(f"{n}.jpeg", fixture_image("normal.jpeg")) for n in range(6)]
    assert api_upload(client, api_token, *films).status_code == 201
    # Another client's transaction takes the server connection the app has been using (pgbouncer hands
    # out the one used last), as in a busy pool: the app's next transactions run on the other one.
    with psycopg.connect(pooler.url.replace("+psycopg", "")) as other:
        other.execute("SELECT 1")
        upload = api_upload(client, api_token, *films)
        assert upload.status_code == 201, upload.json


def test_migrating_behind_a_transaction_pooler_leaves_no_lock_behind(tmp_path):
    # docker/migrate.py makes replicas take turns with an advisory lock. It was the session's: behind a
    # transaction pooler it stayed on the server connection it had used, back in the pool, and every
    # other replica waited for it for ever (three started at once: one migrated, two hung).
    from docker.migrate import MIGRATION_LOCK_KEY

    pooler = PgBouncer(os.environ["TEST_DATABASE_URL"], "transaction")
    try:
        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "APP_ENV": "production",
            "SECRET_KEY": "k" * 40,
            "INSTANCE_DIR": str(tmp_path),
            "DATABASE_URL": pooler.url,
            "PYTHONPATH": str(root),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        start = subprocess.run(
            [sys.executable, "docker/migrate.py"], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )
        assert start.returncode == 0, (start.stdout + start.stderr)[-3000:]
        with psycopg.connect(os.environ["TEST_DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as direct:
            held = direct.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s", (MIGRATION_LOCK_KEY,)
            ).fetchone()[0]
        assert held == 0
    finally:
        pooler.stop()
