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


def int_routes(app) -> list[tuple[str, str, bool]]:
    """(method, path, declares its own range) for every route with an int part, the number replaced by HUGE."""
    found = []
    for rule in app.url_map.iter_rules():
        converters = [c for c in rule._converters.values() if type(c).__name__ == "BoundedIntConverter"]
        if converters:
            path = re.sub(r"<int(\([^)]*\))?:[^>]+>", HUGE, rule.rule)
            declared = any(c.max is not None for c in converters)
            found += [(method, path, declared) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_every_int_route_refuses_a_20_digit_id_cleanly(app, client, auth, admin_token, prediction_id):
    routes = int_routes(app)
    assert len([r for r in routes if not r[2]]) >= 8  # pages: predictions, images, feedback, users, tokens ...
    auth.login("admin")
    for method, path, declared in routes:
        response = client.open(path, method=method, headers=bearer(admin_token))
        if declared:
            # API paths that publish their id range (OpenAPI) answer outside it as "no such resource".
            assert response.status_code == 404 and response.json["error"]["code"] == "not_found", (method, path)
        else:
            assert response.status_code == 400, (method, path, response.status_code)
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
        "date_from=2026-02-30",
        "date_to=10000-01-01",
    ],
)
def test_history_api_refuses_out_of_range_arguments(client, admin_token, query):
    response = client.get(f"/api/v1/predictions?{query}", headers=bearer(admin_token))
    assert response.status_code == 400 and response.json["error"]["message"]


@pytest.mark.parametrize("path", ["/history/", "/admin/history"])
@pytest.mark.parametrize("query", [f"page={HUGE}", "page=0", "date_from=2026-02-30", "date_to=10000-01-01"])
def test_history_pages_refuse_out_of_range_arguments(client, auth, admin_user, path, query):
    auth.login("admin")
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400 and response.mimetype == "text/html"


def test_the_first_and_last_representable_days_are_ordinary_filters(client, auth, admin_token, prediction_id):
    # date_to=9999-12-31 used to overflow (date + 1 day) into a 500; now it is simply "up to the end of time".
    query = "date_from=0001-01-01&date_to=9999-12-31"
    assert client.get(f"/api/v1/predictions?{query}", headers=bearer(admin_token)).json["total"] == 1
    auth.login("admin")
    assert client.get(f"/admin/history?{query}").status_code == 200
    export = client.get(f"/admin/history.csv?{query}")
    assert export.status_code == 200 and export.get_data(as_text=True).count("\n") == 2  # header and the row


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
    assert response.headers["Location"] == f"/predictions/{prediction_id}#review-{prediction_id}"
    assert "evil" not in str(response.headers)


def test_feedback_back_to_results_still_works(client, auth, admin_user, prediction_id):
    auth.login("admin")
    back = f"/screen/results?id={prediction_id}"
    response = client.post(
        f"/predictions/{prediction_id}/feedback",
        data={"csrf_token": csrf_token(client, f"/predictions/{prediction_id}"), "label": "NORMAL", "back": back},
    )
    assert response.status_code == 303 and response.headers["Location"] == f"{back}#review-{prediction_id}"
