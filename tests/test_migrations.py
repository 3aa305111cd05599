"""The migrations, not create_all(), build the schema, and they match the models."""

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import LargeBinary, func, inspect, select, text

from tests.factories import add_prediction
from tests.helpers import reset_database
from webapp.extensions import db
from webapp.models import Prediction, PredictionImages

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


REVIEW, HEATMAP = b"review-copy" * 5000, b"heat-map" * 500


def _film_before_0008(conn) -> None:
    """One user and one prediction, written as revision 0007 stores them: the images in the row."""
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
    # images: the monitoring page walked every image. 0008 moves them out, data and all.
    with app.app_context():
        downgrade(revision="0007_directory_access")
        with db.engine.begin() as conn:
            _film_before_0008(conn)
        upgrade()
        assert "review_png" not in {c["name"] for c in inspect(db.engine).get_columns("predictions")}
        with db.engine.connect() as conn:
            moved = conn.execute(text("SELECT prediction_id, review_png, heatmap_png FROM prediction_images")).all()
        assert [tuple(row) for row in moved] == [(7, REVIEW, HEATMAP)]
        assert db.session.get(Prediction, 7).images.review_png == REVIEW
        db.session.remove()

        downgrade(revision="0007_directory_access")
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
