"""Integers and dates from URLs are range-checked: out-of-range values answer 400, never 500."""

from __future__ import annotations

import re

import pytest

from tests.factories import add_prediction
from tests.helpers import csrf_token

HUGE = "99999999999999999999"  # 20 digits: beyond SQLite's 64-bit and PostgreSQL's 32-bit integers


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def prediction_id(app, admin_user) -> int:
    with app.app_context():
        return add_prediction(admin_user)


def int_routes(app) -> list[tuple[str, str]]:
    """(method, path) for every route with an <int:...> part, the number replaced by HUGE."""
    found = []
    for rule in app.url_map.iter_rules():
        if any(type(c).__name__ == "BoundedIntConverter" for c in rule._converters.values()):
            path = re.sub(r"<int:[^>]+>", HUGE, rule.rule)
            found += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_every_int_route_answers_400_to_a_20_digit_id(app, client, auth, admin_token, prediction_id):
    routes = int_routes(app)
    assert len(routes) >= 8  # predictions, images, feedback, users, tokens, API ...
    auth.login("admin")
    for method, path in routes:
        response = client.open(path, method=method, headers=bearer(admin_token))
        assert response.status_code == 400, (method, path, response.status_code)
        if path.startswith("/api/"):
            assert response.json["error"]["code"] == "bad_request"
        assert "out of range" in response.get_data(as_text=True)
    # The largest id a column holds is still an ordinary 404.
    assert client.get("/predictions/2147483647").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        f"page={HUGE}",
        "page=0",
        "page=-1",
        "page=²",
        f"per_page={HUGE}",
        "per_page=0",
        "date_to=9999-12-31",
        "date_from=0001-01-01",
        "date_from=2026-02-30",
    ],
)
def test_history_api_refuses_out_of_range_arguments(client, admin_token, query):
    response = client.get(f"/api/v1/predictions?{query}", headers=bearer(admin_token))
    assert response.status_code == 400 and response.json["error"]["message"]


@pytest.mark.parametrize("path", ["/history/", "/admin/history"])
@pytest.mark.parametrize("query", [f"page={HUGE}", "date_to=9999-12-31", "date_from=0001-01-01"])
def test_history_pages_refuse_out_of_range_arguments(client, auth, admin_user, path, query):
    auth.login("admin")
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400 and response.mimetype == "text/html"


def test_csv_export_with_an_impossible_date_is_refused_without_error(client, auth, admin_user):
    auth.login("admin")
    response = client.get("/admin/history.csv?date_to=9999-12-31")
    assert response.status_code == 302  # back to the history page with the reason
    assert "Dates must be between" in client.get(response.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize("ids", [f"id={HUGE}", "id=abc", "id=1&id=-2"])
def test_results_page_ids(client, auth, admin_user, prediction_id, ids):
    auth.login("admin")
    assert client.get(f"/screen/results?{ids}").status_code == 400


@pytest.mark.parametrize(
    "back",
    [
        "/screen/results?id=1\r\nSet-Cookie: evil=1",
        "/screen/results?id=1\nLocation: https://evil.example",
        "/screen/results\\@evil.example",
        "/screen/results?id=1 x",
        "https://evil.example/screen/results",
        "//evil.example/screen/results",
    ],
)
def test_feedback_back_link_cannot_split_headers_or_leave_the_site(client, auth, admin_user, prediction_id, back):
    auth.login("admin")
    response = client.post(
        f"/predictions/{prediction_id}/feedback",
        data={"csrf_token": csrf_token(client, f"/predictions/{prediction_id}"), "label": "NORMAL", "back": back},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/predictions/{prediction_id}"
    assert "evil" not in str(response.headers)


def test_feedback_back_to_results_still_works(client, auth, admin_user, prediction_id):
    auth.login("admin")
    back = f"/screen/results?id={prediction_id}"
    response = client.post(
        f"/predictions/{prediction_id}/feedback",
        data={"csrf_token": csrf_token(client, f"/predictions/{prediction_id}"), "label": "NORMAL", "back": back},
    )
    assert response.status_code == 303 and response.headers["Location"] == back
