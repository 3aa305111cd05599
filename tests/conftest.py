"""Shared fixtures: an app on a fresh migrated database, a client, a CLI runner, users and tokens.

The app runs on in-memory SQLite by default; set TEST_DATABASE_URL to run the same tests on
PostgreSQL (CI does both).
"""

from __future__ import annotations

import pytest

from tests.helpers import AuthActions, issue_token, make_user, reset_database
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.pacs import listener

# Fixtures that start servers (slapd) live in their own modules.
pytest_plugins = ["tests.ldap_server"]


@pytest.fixture(autouse=True)
def shell_user(monkeypatch) -> str:
    """The account shell commands are audited as (`cli:operator`), the same on every machine and in CI."""
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("LOGNAME", "operator")
    return "operator"


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
def dicom_port(app) -> int:
    """The app's DICOM node on a free loopback port, taking any calling AE title."""
    app.config.update(DICOM_PORT=0, DICOM_ALLOWED_CALLING_AETS=())
    server = listener.start(app)
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def admin_user(app) -> int:
    return make_user(app, "admin", "admin")


@pytest.fixture
def clinician_user(app) -> int:
    return make_user(app, "clin", "clinician")


@pytest.fixture
def other_clinician(app) -> int:
    return make_user(app, "other", "clinician")


@pytest.fixture
def api_token(app, clinician_user) -> str:
    return issue_token(app, "clin")


@pytest.fixture
def admin_token(app, admin_user) -> str:
    return issue_token(app, "admin")


@pytest.fixture
def auth(client):
    return AuthActions(client)
