"""Every hostile file through the real front doors: the JSON API and the upload page.

Each must get a clean 4xx with a readable message (JSON `{"error": {"code",
"message"}}` from the API), leave no Prediction row and no file behind, and the
server must still screen a real radiograph straight afterwards. Hostile file names
(path separators, NUL bytes, markup) must come back sanitized in JSON and escaped
in HTML.
"""

from __future__ import annotations

import io
import json
from functools import cache

import pytest

from tests.helpers import api_upload, csrf_token, fixture_image, issue_token, make_user, reset_database
from tests.hostile_corpus import hostile_corpus
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import Prediction

# A bulk job by design: the rate limits would stop it long before the corpus is through.
pytestmark = pytest.mark.app_config(RATE_LIMITS_ENABLED=False)

# Browsers percent-encode a double quote in a multipart file name; Werkzeug's test client
# does not, so names with '"' are left to the decode-level corpus.
# (No "/" in it: sanitizing keeps only what follows the last path separator.)
MARKUP_NAME = "<img src=x onerror=alert(1)>.jpg"
HOSTILE_NAMES = [
    "../../../etc/passwd.jpeg",
    "..\\..\\windows\\evil.jpeg",
    "x\x00ray.jpeg",
    MARKUP_NAME,
    "<script>alert(1)</script>.jpeg",
    "\u202egpj.jpeg",
    "a" * 5000 + ".jpeg",
]


@cache
def corpus():
    return hostile_corpus()


def page_post(client, *files, accept=None):
    data = {"csrf_token": csrf_token(client, "/screen"), "files": [(io.BytesIO(body), name) for name, body in files]}
    headers = {"Accept": accept} if accept else {}
    return client.post("/screen", data=data, content_type="multipart/form-data", headers=headers)


def rows(app) -> int:
    with app.app_context():
        return db.session.query(Prediction).count()


def files_under(path) -> set:
    return {p for p in path.rglob("*") if p.is_file()}


def assert_clean_name(name: str) -> None:
    assert "/" not in name and "\\" not in name and "\x00" not in name and "\u202e" not in name
    assert 0 < len(name) <= 200


@pytest.fixture
def signed_in(client, auth, clinician_user):
    auth.login()
    return client


def api_refusal_problems(app, client, token, tmp_path, hostile) -> list[str]:
    """What is wrong with the API's answer to one hostile file (nothing, one hopes)."""
    before_rows, before_files = rows(app), files_under(tmp_path)
    response = api_upload(client, token, (hostile.filename, hostile.data))
    body = response.get_json(silent=True) or {}
    error = body.get("error") or {}
    message = error.get("message") or ""
    checks = {
        f"status {response.status_code}": 400 <= response.status_code < 500,
        f"not JSON: {response.get_data()[:100]!r}": response.mimetype == "application/json",
        f"body {body}": set(body) == {"error"} and set(error) == {"code", "message"},
        f"code {error.get('code')} not in {hostile.codes}": error.get("code") in hostile.codes,
        "empty or technical message": bool(message) and "Traceback" not in message,
        "a Prediction row was written": rows(app) == before_rows,
        "a file was left behind": files_under(tmp_path) == before_files,
    }
    return [f"{hostile.name[:50]}: {problem}" for problem, ok in checks.items() if not ok]


def test_api_refuses_every_hostile_file_cleanly_and_keeps_serving(app, client, api_token, tmp_path):
    problems = []
    for hostile in corpus():
        problems += api_refusal_problems(app, client, api_token, tmp_path, hostile)
        # The worker keeps serving: a real film straight after each hostile file.
        before = rows(app)
        again = api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))
        if again.status_code != 201 or rows(app) != before + 1:
            problems.append(f"{hostile.name[:50]}: the next real upload got {again.status_code}")
    assert not problems, "\n".join(problems)
    assert rows(app) == len(corpus())


def test_api_refuses_the_whole_corpus_in_one_batch_and_keeps_the_good_file(app, client, api_token):
    files = [(h.filename, h.data) for h in corpus()[:19]] + [("normal.jpeg", fixture_image("normal.jpeg"))]
    response = api_upload(client, api_token, *files)
    assert response.status_code == 207
    *refused, accepted = response.get_json()["predictions"]
    assert all(400 <= item["status"] < 500 and set(item["error"]) == {"code", "message"} for item in refused)
    assert all("id" not in item for item in refused) and "id" in accepted
    for item in refused:
        assert_clean_name(item["filename"])
    assert rows(app) == 1


def test_upload_page_refuses_every_hostile_file_with_a_message(app, signed_in):
    problems = []
    for hostile in corpus():
        before = rows(app)
        response = page_post(signed_in, (hostile.filename, hostile.data))
        html = response.get_data(as_text=True)
        checks = {
            f"status {response.status_code}": 400 <= response.status_code < 500,
            f"mimetype {response.mimetype}": response.mimetype == "text/html",
            "no error message on the page": 'class="error"' in html and "Traceback" not in html,
            "unescaped markup from the file name": "<script>alert" not in html and "<img src=x" not in html,
            "a Prediction row was written": rows(app) == before,
        }
        problems += [f"{hostile.name[:50]}: {p}" for p, ok in checks.items() if not ok]
        if page_post(signed_in, ("normal.jpeg", fixture_image("normal.jpeg"))).status_code != 303:
            problems.append(f"{hostile.name[:50]}: the next real upload failed")
    assert not problems, "\n".join(problems)


def test_upload_page_json_errors_are_clean_and_names_sanitized(app, signed_in):
    picked = corpus()[:10] + corpus()[-8:]  # the last ones carry the hostile names
    response = page_post(signed_in, *[(h.filename, h.data) for h in picked], accept="application/json")
    assert 400 <= response.status_code < 500
    errors = response.get_json()["errors"]
    assert len(errors) == len(picked)
    for error in errors:
        assert error["message"] and error["code"]
        assert_clean_name(error["filename"])
    assert rows(app) == 0


@pytest.mark.app_config(STORE_ORIGINAL_FILENAMES=True, RATE_LIMITS_ENABLED=False)
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_names_on_a_real_film_are_sanitized_in_json(app, client, api_token, name):
    response = api_upload(client, api_token, (name, fixture_image("normal.jpeg")))
    assert response.status_code == 201
    (item,) = response.get_json()["predictions"]
    assert_clean_name(item["filename"])
    read_back = client.get(
        f"/api/v1/predictions/{item['id']}", headers={"Authorization": f"Bearer {api_token}"}
    ).get_json()
    assert read_back["filename"] == item["filename"]
    raw = json.dumps(response.get_json())
    assert "\\u0000" not in raw and "../" not in raw


@pytest.mark.app_config(STORE_ORIGINAL_FILENAMES=True, RATE_LIMITS_ENABLED=False)
def test_markup_in_a_name_is_escaped_on_every_page(app, client, auth, clinician_user, admin_user):
    auth.login()
    response = page_post(client, (MARKUP_NAME, fixture_image("normal.jpeg")))
    assert response.status_code == 303
    pages = [response.headers["Location"], "/predictions/1", "/history/"]
    refused = page_post(client, (MARKUP_NAME, b"%PDF-1.4\n"))
    pages_html = [client.get(p).get_data(as_text=True) for p in pages] + [refused.get_data(as_text=True)]
    auth.logout()
    auth.login("admin")
    pages_html += [client.get(p).get_data(as_text=True) for p in ("/admin/history", "/predictions/1")]
    for html in pages_html:
        assert "<img src=x" not in html
    assert all("&lt;img src=x onerror=alert(1)&gt;.jpg" in html for html in pages_html)


def test_an_upload_over_the_size_limit_gets_413_json_and_no_row(tmp_path):
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "MAX_UPLOAD_MB": 1, "MAX_CONTENT_LENGTH": 1024 * 1024})
    with app.app_context():
        reset_database()
    make_user(app, "clin", "clinician")
    token = issue_token(app, "clin")
    response = api_upload(app.test_client(), token, ("big.jpeg", b"\xff\xd8\xff" + bytes(2 * 1024 * 1024)))
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    assert "1 MB" in response.get_json()["error"]["message"]
    assert rows(app) == 0
