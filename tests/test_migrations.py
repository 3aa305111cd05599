"""The migrations, not create_all(), build the schema, and they match the models."""

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from tests.helpers import reset_database
from webapp.extensions import db

TABLES = {"users", "api_tokens", "predictions", "feedback", "sign_in_counters", "audit_events", "alembic_version"}


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


def test_counters_keyed_on_a_typed_name_in_clear_are_dropped(app):
    # Until 0008 the per-account counter's key held the name as typed, which may be a password.
    with app.app_context():
        downgrade(revision="0007_directory_access")
        for key in ("pair:hunter2-typed-as-name|10.0.0.1", "addr:10.0.0.1"):
            db.session.execute(
                text("INSERT INTO sign_in_counters (key, failures, last_failure_at) VALUES (:key, 3, :at)"),
                {"key": key, "at": datetime(2026, 12, 1, tzinfo=UTC)},
            )
        db.session.commit()
        upgrade()
        assert db.session.scalars(text("SELECT key FROM sign_in_counters")).all() == ["addr:10.0.0.1"]
