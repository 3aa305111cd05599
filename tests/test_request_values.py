"""Values no form rule expects (a NUL character) and values the database refuses: a 400 that says
what to fix, never a 500, on SQLite and PostgreSQL alike (TEST_DATABASE_URL)."""

from __future__ import annotations

import logging

import pytest
from markupsafe import escape
from sqlalchemy.exc import DataError

from tests.helpers import csrf_token, fixture_image
from webapp.extensions import db
from webapp.models import AuditEvent, Prediction, User, ValidationRun


def test_a_nul_in_a_sign_in_name_is_refused_before_the_database(app, client, clinician_user):
    token = csrf_token(client, "/auth/login")
    response = client.post("/auth/login", data={"username": "cl\x00in", "password": "x" * 12, "csrf_token": token})
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(AuditEvent).count() == 0  # nothing half-written for the refused request


@pytest.mark.parametrize(
    ("user", "path", "field", "accept"),
    [
        ("clin", "/screen", "files", "text/html"),
        ("clin", "/screen", "files", "application/json"),  # as the upload page's script asks
        ("admin", "/admin/validation/", "archive", "text/html"),
    ],
)
def test_a_file_sent_as_a_text_part_is_told_to_be_a_file_part(
    app, client, auth, admin_user, clinician_user, user, path, field, accept
):
    """Found by the leftovers review: a film sent as a plain form field (curl -F 'files=<film.dcm',
    a part without a filename) was refused as "A field of the request contains a NUL character",
    which sends the client hunting for a NUL in its text fields."""
    auth.login(user)
    film = fixture_image("normal.jpeg").decode("latin-1")  # a JPEG holds NULs
    data = {"csrf_token": csrf_token(client, path), field: film}
    response = client.post(path, data=data, content_type="multipart/form-data", headers={"Accept": accept})
    assert response.status_code == 400
    said = (
        f"The form field '{field}' holds binary data sent as text, not as a file: send it as a file part with a "
        f"filename (curl -F '{field}=@path/to/file', not -F '{field}=<path/to/file')."
    )
    if accept == "application/json":
        assert response.json["error"]["code"] == "no_file" and response.json["error"]["message"].startswith(said)
    else:
        assert escape(said) in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Prediction).count() == db.session.query(ValidationRun).count() == 0


@pytest.mark.parametrize("path", ["/admin/history?user=a%00b", "/admin/audit?action=a%00b", "/history/?q=%00"])
def test_a_nul_in_a_query_value_is_a_400(client, auth, admin_user, path):
    auth.login("admin")
    assert client.get(path).status_code == 400


def test_a_value_the_database_refuses_is_a_400_with_nothing_written(app, client, auth, clinician_user, monkeypatch):
    """The backstop behind the form rules: a DataError (what PostgreSQL raises for a NUL or an
    over-long string) rolls back and answers 400."""
    auth.login()
    token = csrf_token(client, "/history/")

    def refuse():
        raise DataError("UPDATE users", {}, Exception("value too long"))

    monkeypatch.setattr(db.session, "commit", refuse)
    response = client.post("/preferences/theme", data={"csrf_token": token, "theme": "dark", "back": "/history/"})
    monkeypatch.undo()
    assert response.status_code == 400
    assert "cannot be stored" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, clinician_user).theme == "system"


def test_database_errors_do_not_log_the_values(app, caplog):
    with app.app_context(), caplog.at_level(logging.ERROR):
        with pytest.raises(Exception) as caught:
            db.session.execute(db.text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "comment text"})
        db.session.rollback()
    assert "comment text" not in str(caught.value)
