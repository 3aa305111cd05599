"""Helpers that tests import: paths, known passwords, users, tokens, CSRF tokens, fixture images, uploads.

Fixtures live in conftest.py (pytest finds them); plain functions live here, so a test file
imports them like any module instead of reaching into conftest.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import threading
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import func, select, text
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.inference.decide import UnknownPolicy
from webapp.models import ApiToken, User, ValidationItem

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
PASSWORDS = {"admin": "admin-password-1", "clin": "clinician-pass-1", "other": "other-clin-pass-1"}


def reset_database() -> None:
    """Drop everything, then build the schema through the migrations, as a deployment does."""
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade()


def threadable_app(tmp_path: Path, **overrides):
    """An app, its schema built, that request threads can share: in-memory SQLite is one shared
    connection, so on SQLite each thread gets its own connection to a file (PostgreSQL: as configured)."""
    if not os.environ.get("TEST_DATABASE_URL"):
        overrides.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'threads.sqlite'}")
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **overrides})
    with app.app_context():
        reset_database()
    return app


def held_after_answering(monkeypatch, owner, name: str) -> None:
    """Replace `owner.name` (a look-up) by one that, having answered, waits until a second call has
    answered too: two requests racing through it then both act on what they saw before either wrote."""
    both_answered = threading.Barrier(2)
    look = getattr(owner, name)

    def answer_then_wait(*args):
        answer = look(*args)
        both_answered.wait(timeout=30)
        return answer

    static = isinstance(inspect.getattr_static(owner, name), staticmethod)
    monkeypatch.setattr(owner, name, staticmethod(answer_then_wait) if static else answer_then_wait)


def in_parallel(*calls):
    """Run each call in its own thread, all started together; their results, in order."""
    results = [None] * len(calls)

    def run(index, call):
        results[index] = call()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def make_user(app, username: str, role: str) -> int:
    with app.app_context():
        user = User(username=username, role=role)
        user.set_password(PASSWORDS[username])
        db.session.add(user)
        db.session.commit()
        return user.id


def issue_token(app, username: str) -> str:
    with app.app_context():
        _, token = ApiToken.create(User.by_username(username))
        db.session.commit()
        return token


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(client, path: str) -> str:
    """The CSRF token a real browser would submit, read from the page that holds the form."""
    html = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def token_form(client) -> dict[str, str]:
    """What the admin users page's "Issue API token" form sends besides its fields: the CSRF token
    and the form's one-time `once` value, read from the page as a browser would."""
    html = client.get("/admin/users").get_data(as_text=True)
    match = CSRF_RE.search(html)
    once = re.search(r'name="once" value="([^"]+)"', html)
    assert match and once, "no token form on /admin/users"
    return {"csrf_token": match.group(1) or match.group(2), "once": once.group(1)}


def fixture_image(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


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


def api_upload(client, token: str, *files: tuple[str, bytes]):
    """POST /api/v1/predictions with `files` ((name, bytes) pairs) as parts named `file`."""
    return client.post(
        "/api/v1/predictions",
        headers={"Authorization": f"Bearer {token}"},
        data={"file": [(io.BytesIO(body), name) for name, body in files]},
        content_type="multipart/form-data",
    )


def post_without_length(client, path: str, body: bytes, content_type: str, headers: dict | None = None):
    """POST `body` with neither a Content-Length nor chunked encoding, as a hand-built request may: the
    server reads its body as empty (the test client always sends a length, so it is taken out here)."""
    environ = EnvironBuilder(
        path=path, method="POST", data=body, content_type=content_type, headers=headers
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    return client.open(Request(environ))


def app_with_model_file(instance_dir: Path, content: bytes | None):
    """An app whose model file is missing (None) or holds `content` (a corrupt model, say)."""
    model = instance_dir / "cxr_pneumonia.keras"
    if content is not None:
        model.write_bytes(content)
    return create_app(TestingConfig, {"INSTANCE_DIR": instance_dir, "MODEL_PATH": model})


def item_states(app, run_id: int) -> dict[str, int]:
    """How many of a validation run's films are in each state."""
    with app.app_context():
        rows = db.session.execute(
            select(ValidationItem.state, func.count())
            .where(ValidationItem.run_id == run_id)
            .group_by(ValidationItem.state)
        )
        return dict(rows.all())


def drain(app) -> int:
    """Run every queued job in this process, as a worker would; returns how many ran."""
    huey = app.extensions["jobs"].huey
    count = 0
    while (job := huey.dequeue()) is not None:
        huey.execute(job)
        count += 1
    return count


# An UNKNOWN policy with round numbers, for tests of decide() that must not depend on the shipped card.
TEST_POLICY = UnknownPolicy(
    max_colourfulness=0.03,
    min_aspect_ratio=0.5,
    max_aspect_ratio=2.0,
    min_chest_probability=0.3,
    uncertainty_band=0.02,
    max_feature_distance=3.0,
)
