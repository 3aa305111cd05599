"""The app published under a path of a shared host (https://intranet.hospital.example/cxr/), by a reverse
proxy's X-Forwarded-Prefix (nginx: `location /cxr/ { proxy_pass http://app:8000/; ... }`) or gunicorn's
SCRIPT_NAME: every address it hands the browser stays under that path (docs/deployment.md, "Under a path").
The browser journey under a real nginx is tests/e2e/test_under_a_path.py."""

from __future__ import annotations

import pytest

from tests.factories import add_prediction
from tests.helpers import CSRF_RE, PASSWORDS
from webapp import create_app
from webapp.config import TestingConfig

UNDER = "http://localhost/cxr/"  # the test client's SCRIPT_NAME /cxr, as gunicorn's would be


def sign_in_under_the_path(client, next_page: str | None = None):
    query = f"?next={next_page}" if next_page else ""
    token = csrf_token_under(client, "/auth/login")
    return client.post(
        f"/auth/login{query}",
        data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": token},
        base_url=UNDER,
    )


def csrf_token_under(client, path: str, base_url: str = UNDER) -> str:
    html = client.get(path, base_url=base_url).get_data(as_text=True)
    match = CSRF_RE.search(html)
    assert match, f"no CSRF token on {path}: {html[:300]}"
    return match.group(1) or match.group(2)


@pytest.mark.parametrize("trusted, expected", [(1, "/cxr/auth/login?next=/screen"), (0, "/auth/login?next=/screen")])
def test_the_proxys_prefix_is_taken_from_a_trusted_proxy_only(tmp_path, trusted, expected):
    """Found behind nginx with `proxy_set_header X-Forwarded-Prefix /cxr;` and TRUSTED_PROXIES=1: the
    sign-in redirect, the stylesheet and every link went to the host's root (https://intranet/screen),
    where another application, or nothing, answers."""
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "TRUSTED_PROXIES": trusted})
    client = app.test_client()
    answer = client.get("/screen", headers={"X-Forwarded-Prefix": "/cxr"})
    assert answer.status_code == 302 and answer.headers["Location"] == expected
    page = client.get("/auth/login", headers={"X-Forwarded-Prefix": "/cxr"}).get_data(as_text=True)
    assert f'href="{expected.removesuffix("/auth/login?next=/screen")}/static/app.css"' in page


def test_sign_in_brings_the_reader_back_under_the_path(client, clinician_user):
    """The page asked for before sign-in (`next`, a path within the app as request.path gives it) was
    sent back as it was: Location /screen left https://intranet/cxr/ for the host's root."""
    answer = client.get("/history/?page=1", base_url=UNDER)
    assert answer.headers["Location"] == "/cxr/auth/login?next=/history/?page%3D1"
    answer = sign_in_under_the_path(client, "/history/?page%3D1")
    assert answer.status_code == 302 and answer.headers["Location"] == "/cxr/history/?page=1"


def test_a_form_sent_after_the_session_ended_brings_the_reader_back_to_its_page(client, clinician_user):
    """The form's page comes from the browser's Referer, which holds the prefix: it was kept with it, and
    the sign-in then led to /cxr/cxr/history/."""
    answer = client.post(
        "/preferences/theme", data={"theme": "dark"}, base_url=UNDER, headers={"Referer": UNDER + "history/"}
    )
    assert answer.headers["Location"] == "/cxr/auth/login?next=/history/"


def test_the_theme_switch_and_an_expired_sign_in_page_stay_under_the_path(client, clinician_user):
    answer = client.post("/auth/login?next=/history/", data={"username": "clin"}, base_url=UNDER)  # no CSRF token
    assert answer.status_code == 303 and answer.headers["Location"] == "/cxr/auth/login?next=/history/"
    sign_in_under_the_path(client)
    token = csrf_token_under(client, "/history/")
    answer = client.post(
        "/preferences/theme", data={"csrf_token": token, "theme": "dark", "back": "/history/"}, base_url=UNDER
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/cxr/history/"


def test_a_saved_reading_returns_to_the_results_page_under_the_path(app, client, clinician_user):
    with app.app_context():
        film = add_prediction(clinician_user)
    sign_in_under_the_path(client)
    results = f"/screen/results?id={film}"
    page = client.get(results, base_url=UNDER).get_data(as_text=True)
    assert f'name="back" value="{results}"' in page  # as request.full_path gives it: within the app
    token = csrf_token_under(client, results)
    answer = client.post(
        f"/predictions/{film}/feedback",
        data={"csrf_token": token, "label": "NORMAL", "comment": "", "back": results},
        base_url=UNDER,
    )
    assert answer.status_code == 303 and answer.headers["Location"] == f"/cxr{results}#review-{film}"


@pytest.mark.parametrize("base_url, path", [(UNDER, "/cxr"), ("http://localhost/", "/")])
def test_the_session_cookie_is_scoped_to_the_path(client, clinician_user, base_url, path):
    """The session (the sign-in and the CSRF token) was sent with Path=/ under /cxr too: the browser
    handed it to every other application on the host, and a cookie named `session` set by one of them
    at / replaced it."""
    token = csrf_token_under(client, "/auth/login", base_url)
    answer = client.post(
        "/auth/login",
        data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": token},
        base_url=base_url,
    )
    cookies = answer.headers.getlist("Set-Cookie")
    assert answer.headers["Location"] == f"{path.rstrip('/')}/screen"  # signed in
    assert len(cookies) == 1 and f"; Path={path};" in cookies[0] + ";"
