"""Shared fixtures: an app on a fresh migrated database, a client, a CLI runner, users and tokens.

The app runs on in-memory SQLite by default; set TEST_DATABASE_URL to run the same tests on
PostgreSQL (CI does both).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import ApiToken, User

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
PASSWORDS = {"admin": "admin-password-1", "clin": "clinician-pass-1", "other": "other-clin-pass-1"}


def reset_database() -> None:
    """Drop everything, then build the schema through the migrations, as a deployment does."""
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade()


@pytest.fixture
def app(request, tmp_path):
    # A module or test can change settings: pytestmark = pytest.mark.app_config(NAME=value, ...)
    marker = request.node.get_closest_marker("app_config")
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **(marker.kwargs if marker else {})})
    with app.app_context():
        reset_database()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def make_user(app, username: str, role: str) -> int:
    with app.app_context():
        user = User(username=username, role=role)
        user.set_password(PASSWORDS[username])
        db.session.add(user)
        db.session.commit()
        return user.id


@pytest.fixture
def admin_user(app) -> int:
    return make_user(app, "admin", "admin")


@pytest.fixture
def clinician_user(app) -> int:
    return make_user(app, "clin", "clinician")


@pytest.fixture
def other_clinician(app) -> int:
    return make_user(app, "other", "clinician")


def issue_token(app, username: str) -> str:
    with app.app_context():
        token = ApiToken.issue(User.by_username(username))
        db.session.commit()
        return token


@pytest.fixture
def api_token(app, clinician_user) -> str:
    return issue_token(app, "clin")


@pytest.fixture
def admin_token(app, admin_user) -> str:
    return issue_token(app, "admin")


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(client, path: str) -> str:
    """The CSRF token a real browser would submit, read from the page that holds the form."""
    html = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, username: str = "clin", password: str | None = None):
        token = csrf_token(self._client, "/auth/login")
        return self._client.post(
            "/auth/login", data={"username": username, "password": password or PASSWORDS[username], "csrf_token": token}
        )

    def logout(self):
        token = csrf_token(self._client, "/screen")
        return self._client.post("/auth/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client):
    return AuthActions(client)


def fixture_image(name: str) -> bytes:
    return (IMAGES / name).read_bytes()
