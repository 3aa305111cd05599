"""The migrations, not create_all(), build the schema, and they match the models."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

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
