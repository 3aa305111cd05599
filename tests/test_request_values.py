"""Values no form rule expects (a NUL character) and values the database refuses: a 400 that says
what to fix, never a 500, on SQLite and PostgreSQL alike (TEST_DATABASE_URL)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import DataError

from tests.helpers import csrf_token
from webapp.extensions import db
from webapp.models import AuditEvent, User


def test_a_nul_in_a_sign_in_name_is_refused_before_the_database(app, client, clinician_user):
    token = csrf_token(client, "/auth/login")
    response = client.post("/auth/login", data={"username": "cl\x00in", "password": "x" * 12, "csrf_token": token})
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(AuditEvent).count() == 0  # nothing half-written for the refused request


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
