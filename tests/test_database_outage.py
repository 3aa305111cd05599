"""A database that cannot be reached, or cannot store, mid-request: a 503 that says so, never a 500
"something went wrong"."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from sqlalchemy import event, func, select

from tests.helpers import api_upload, csrf_token, fixture_image, reset_database
from webapp.app import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import Prediction


@pytest.fixture
def app(tmp_path):
    """A database that outlives its connections (a file, or the suite's PostgreSQL): the in-memory one
    would be gone with the connections the outage closes."""
    url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'cxr.sqlite'}"
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        reset_database()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@contextlib.contextmanager
def statements_refused(app, refuse):
    """`refuse(conn, cursor, statement, ...)` runs before every statement the app sends, and may raise."""
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", refuse)


@contextlib.contextmanager
def inserts_failing(app, after: int):
    """The database refuses every INSERT of a prediction after the first `after` ones, as a full disk
    or a server gone mid-request would, on a connection the request already holds."""
    inserted = 0

    def refuse(conn, _cursor, statement, *_args):
        nonlocal inserted
        if statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS"):
            inserted += 1
            if inserted > after:
                raise conn.dialect.dbapi.OperationalError("database or disk is full (test)")

    with statements_refused(app, refuse):
        yield


def stored_predictions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Prediction))


@contextlib.contextmanager
def database_unreachable(app):
    """Every new connection refused by the driver, as when the server is down or its name does not
    resolve; the pool is emptied first so no request finds an open connection."""

    def refuse(dialect, *_args):
        raise dialect.dbapi.OperationalError("connection refused (test: the database is down)")

    with app.app_context():
        engine = db.engine
        engine.dispose()
        event.listen(engine, "do_connect", refuse)
        try:
            yield
        finally:
            event.remove(engine, "do_connect", refuse)


def test_an_api_upload_during_an_outage_is_a_503_and_the_next_one_is_stored(app, client, api_token):
    film = ("film.jpeg", fixture_image("normal.jpeg"))
    with database_unreachable(app):
        refused = api_upload(client, api_token, film)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "database_unavailable"
    assert "nothing was saved" in refused.get_json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) > 0

    stored = api_upload(client, api_token, film)  # the database is back: served as usual
    assert stored.status_code == 201
    assert stored_predictions(app) == 1


def test_an_outage_is_one_log_line_not_the_rate_limiters_traceback(app, client, api_token, auth, caplog):
    """The rate limiter's keys (the token, the signed-in user) are read from the database: during an
    outage Flask-Limiter logged "Rate limit storage unreachable - falling back to in-memory storage"
    (its storage is memory or Redis, and was fine), then "Failed to rate limit" with a 60-line
    traceback, then "storage recovered", on every API call and upload, beside the handler's one line."""
    auth.login()
    form = {"csrf_token": csrf_token(client, "/screen"), "files": (io.BytesIO(fixture_image("normal.jpeg")), "a.jpeg")}
    with database_unreachable(app):
        assert client.post("/screen", data=form, content_type="multipart/form-data").status_code == 503
        assert client.get("/api/v1/predictions/1", headers={"Authorization": f"Bearer {api_token}"}).status_code == 503
        assert api_upload(client, api_token, ("film.jpeg", fixture_image("normal.jpeg"))).status_code == 503
    limiter_lines = [r.getMessage() for r in caplog.records if r.name.startswith("flask-limiter")]
    assert limiter_lines == []
    assert not [r for r in caplog.records if r.exc_info]
    outage_lines = [r for r in caplog.records if r.getMessage().startswith("database unavailable on ")]
    assert len(outage_lines) == 3


def test_an_upload_whose_insert_fails_is_a_503_with_nothing_stored(app, client, api_token):
    """The token was read, then the database failed (disk full): it was a 500 `screening_failed`."""
    with inserts_failing(app, after=0):
        refused = api_upload(client, api_token, ("film.jpeg", fixture_image("normal.jpeg")))
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "database_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert stored_predictions(app) == 0


def test_a_batch_keeps_the_answers_saved_before_the_database_failed(app, client, api_token):
    films = [("a.jpeg", fixture_image("normal.jpeg")), ("b.jpeg", fixture_image("pneumonia.jpeg"))]
    with inserts_failing(app, after=1):
        answer = api_upload(client, api_token, *films)
    assert answer.status_code == 207
    first, second = answer.get_json()["predictions"]
    assert first["label"] in ("NORMAL", "PNEUMONIA", "UNKNOWN") and first["id"]
    assert second["error"]["code"] == "database_unavailable" and second["status"] == 503
    assert stored_predictions(app) == 1


def test_a_page_during_an_outage_says_the_database_is_unreachable(app, client, clinician_user, auth):
    auth.login()
    with database_unreachable(app):
        page = client.get("/history/")
    assert page.status_code == 503
    assert b"database is not available" in page.data
    assert b"Traceback" not in page.data


def test_every_operation_documents_the_503_and_the_upload_keeps_its_own(client, api_token):
    """The shared 503 is added where an operation has none of its own; an operation's own 503 (the
    upload's, whose body may list the refused files) is not replaced by it."""
    document = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {api_token}"}).get_json()
    operations = [op for item in document["paths"].values() for method, op in item.items() if method != "parameters"]
    assert operations and all("503" in op["responses"] for op in operations)
    upload_503 = document["paths"]["/predictions"]["post"]["responses"]["503"]
    assert upload_503["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchError"}
    assert "database_unavailable" in upload_503["description"]


@contextlib.contextmanager
def server_gone_at_first_prediction_insert(app):
    """The database server goes away as the film is stored: that statement and every later one fail
    (SELECTs too, unlike a full disk)."""
    gone = False

    def refuse(conn, _cursor, statement, *_args):
        nonlocal gone
        gone = gone or statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS")
        if gone:
            raise conn.dialect.dbapi.OperationalError("server closed the connection unexpectedly (test)")

    with statements_refused(app, refuse):
        yield


def test_an_api_upload_when_the_server_goes_away_is_a_503_not_a_500(app, client, api_token, caplog):
    """The rollback expired the token's user; the request log line then read its id from the server
    that had gone, and the 503 became a 500 with a traceback."""
    with server_gone_at_first_prediction_insert(app):
        refused = api_upload(client, api_token, ("film.jpeg", fixture_image("normal.jpeg")))
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "database_unavailable"
    logged = [r.fields for r in caplog.records if r.name == "webapp.requests" and hasattr(r, "fields")]
    assert logged and logged[-1]["status"] == 503 and logged[-1]["user_id"] is not None


@contextlib.contextmanager
def server_gone_after_first_prediction(app):
    """The database server goes away once the request's first prediction is committed: every later
    statement fails, reads included (a full disk, above, still answers them)."""
    state = {"inserted": False, "gone": False}

    def refuse(conn, _cursor, statement, *_args):
        if state["gone"]:
            raise conn.dialect.dbapi.OperationalError("server closed the connection unexpectedly (test)")
        state["inserted"] = state["inserted"] or statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS")

    def committed(_conn):
        state["gone"] = state["inserted"]

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", refuse)
    event.listen(engine, "commit", committed)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
        event.remove(engine, "commit", committed)


def test_a_batch_keeps_the_saved_answers_when_the_server_goes_away(app, client, api_token):
    """The rollback after the failure expired the saved prediction, whose answer was then read back
    from the server that had gone: the whole batch a 503, the saved film's answer lost (a retry stores
    it twice)."""
    films = [("a.jpeg", fixture_image("normal.jpeg")), ("b.jpeg", fixture_image("pneumonia.jpeg"))]
    with server_gone_after_first_prediction(app):
        answer = api_upload(client, api_token, *films)
    assert answer.status_code == 207
    first, second = answer.get_json()["predictions"]
    assert first["id"] and first["filename"] == "a.jpeg" and first["user"] == "clin"
    assert second["error"]["code"] == "database_unavailable" and second["status"] == 503
    assert stored_predictions(app) == 1
    again = api_upload(client, api_token, *films)  # the server is back: the same user, as usual
    assert again.status_code == 201 and [p["user"] for p in again.get_json()["predictions"]] == ["clin", "clin"]


def test_a_batch_with_nothing_saved_is_a_503_even_after_a_refused_file(app, client, api_token):
    """The first file refused (not an image), the second lost to the database: nothing was saved, so
    the answer is the database's 503 with Retry-After, as documented; it was 415 `all_files_rejected`
    (the tie between the two items went to the first), telling the client that its files were at fault."""
    films = [("notes.txt", b"not an image at all"), ("b.jpeg", fixture_image("pneumonia.jpeg"))]
    with inserts_failing(app, after=0):
        refused = api_upload(client, api_token, *films)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "database_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert stored_predictions(app) == 0
