"""Who may call what: every route the app registers, against every kind of caller.

The tests walk app.url_map (every rule, every method), so a route added later must first be declared
in ACCESS (the first test fails until it is) and is then held to its declaration: by signed-in
clinicians and administrators, by sessions that have ended (deactivation, sign-out elsewhere, a
password changed or reset, the idle and absolute timeouts), by API tokens of each kind (a clinician's,
an administrator's, revoked, expired, a deactivated user's, one sent in the query string or a cookie),
and for CSRF, method override headers, state changes on GET and cache headers. Anonymous callers:
tests/test_auth.py. The matrix is the floor; each rule's own behaviour is tested where it lives.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, text

from tests.factories import PNG_1PX, add_prediction
from tests.helpers import PASSWORDS, AuthActions, csrf_token, issue_token
from webapp.auth import sessions
from webapp.extensions import db
from webapp.models import ApiToken, User, ValidationItem, ValidationRun, utcnow

PUBLIC, SIGNED_IN, ADMIN, TOKEN, ADMIN_TOKEN = "public", "signed in", "admin", "token", "admin token"

# One line per endpoint, written out rather than derived from blueprints: the declaration is what the
# guards are checked against, so it must not come from the guards themselves.
ACCESS = {
    "static": PUBLIC,
    "auth.login": PUBLIC,
    "health.healthz": PUBLIC,
    "health.readyz": PUBLIC,
    "auth.logout": SIGNED_IN,
    "auth.change_password": SIGNED_IN,
    "screening.index": SIGNED_IN,
    "screening.upload": SIGNED_IN,
    "screening.results": SIGNED_IN,
    "screening.detail": SIGNED_IN,
    "screening.print_view": SIGNED_IN,
    "screening.image": SIGNED_IN,
    "screening.heatmap": SIGNED_IN,
    "screening.heatmap_layer": SIGNED_IN,
    "screening.heatmap_key": SIGNED_IN,
    "screening.feedback": SIGNED_IN,
    "history.mine": SIGNED_IN,
    "pacs.worklist": SIGNED_IN,
    "pacs.open_film": SIGNED_IN,
    "preferences.theme": SIGNED_IN,
    "admin.audit": ADMIN,
    "admin.history": ADMIN,
    "admin.export_csv": ADMIN,
    "admin.summary": ADMIN,
    "admin.users": ADMIN,
    "admin.toggle_active": ADMIN,
    "admin.reset_password": ADMIN,
    "admin.issue_user_token": ADMIN,
    "admin.revoke_user_token": ADMIN,
    "pacs.outbox": ADMIN,
    "pacs.retry": ADMIN,
    "pacs.discard_result": ADMIN,
    "validation.index": ADMIN,
    "validation.report": ADMIN,
    "validation.adopt_threshold": ADMIN,
    "validation.cancel_run": ADMIN,
    "validation.delete": ADMIN,
    "validation.redact": ADMIN,
    "validation.films_csv": ADMIN,
    "validation.film_image": ADMIN,
    "validation.film_heatmap": ADMIN,
    "validation.withdraw_threshold": ADMIN,
    "validation.monitoring": ADMIN,
    "validation.monitoring_json": ADMIN,
    "api.create_predictions": TOKEN,
    "api.get_prediction": TOKEN,
    "api.list_tokens": TOKEN,
    "api.revoke_own_token": TOKEN,
    "api.openapi": TOKEN,
    "api.list_predictions": ADMIN_TOKEN,
    "api.list_audit_events": ADMIN_TOKEN,
    "api.get_monitoring": ADMIN_TOKEN,
    "api.adopt_site_calibration": ADMIN_TOKEN,
    "api.get_site_calibration": ADMIN_TOKEN,
    "api.withdraw_site_calibration": ADMIN_TOKEN,
    "api.create_validation_run": ADMIN_TOKEN,
    "api.ValidationRunById": ADMIN_TOKEN,
    "api.redact_validation_run": ADMIN_TOKEN,
}
BROWSER = {SIGNED_IN, ADMIN}
API = {TOKEN, ADMIN_TOKEN}
# A form that refuses a missing CSRF token its own way: the sign-in form is shown again (test_auth.py).
OWN_CSRF_ANSWER = {"auth.login"}
NOWHERE = 2_000_000_000  # an id no row has: past the guard, a state-changing view finds nothing to change


@pytest.fixture
def world(app, admin_user, clinician_user, other_clinician):
    """Rows for every kind of id a route takes: a PACS film anyone signed in may open, a validation run
    with one film, and the users. Ids of rows a request could change or end (users, tokens) are NOWHERE."""
    with app.app_context():
        film = add_prediction(None, "PNEUMONIA", source="dicom", filename="pacs-1.dcm")
        theirs = add_prediction(other_clinician, filename="theirs.jpeg")
        run = ValidationRun(created_by_id=admin_user, archive_name="site.zip", archive_sha256="0" * 64, status="done")
        db.session.add(run)
        db.session.flush()
        item = ValidationItem(run_id=run.id, entry="a.png", truth="NORMAL", review_png=PNG_1PX, heatmap_png=PNG_1PX)
        db.session.add(item)
        db.session.commit()
        return {"prediction_id": film, "id": film, "run_id": run.id, "item_id": item.id, "theirs": theirs}


def requests(app, ids: dict, only=None):
    """(endpoint, method, url) for every rule and method of the URL map: the GETs first (a POST may
    delete the validation run a GET reads), sign-out last."""
    found = []
    for rule in app.url_map.iter_rules():
        if only is not None and ACCESS.get(rule.endpoint) not in only:
            continue
        url = rule.build({name: ids.get(name, NOWHERE) for name in rule.arguments}, append_unknown=False)[1]
        found += [(rule.endpoint, method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(found, key=lambda request: (request[0] == "auth.logout", request[1] != "GET"))


def send(client, method, url, token=None, **kwargs):
    data = {"csrf_token": token} if token and method != "GET" else None
    return client.open(url, method=method, data=data, **kwargs)


def sent_to_sign_in(response) -> bool:
    return response.status_code == 302 and "/auth/login" in response.headers["Location"]


def signed_in(app, username: str):
    client = app.test_client()
    AuthActions(client).login(username)
    return client, csrf_token(client, "/screen")


def test_every_route_is_declared(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - ACCESS.keys() == set(), "declare who may call the new route in ACCESS"
    assert ACCESS.keys() - endpoints == set(), "ACCESS names a route that is gone"


@pytest.mark.parametrize("username", ["clin", "admin"])
def test_signed_in_users_reach_what_their_role_may_and_nothing_else(app, world, username):
    client, token = signed_in(app, username)
    for endpoint, method, url in requests(app, world, only=BROWSER | API):  # public ones: test_auth.py
        response = send(client, method, url, token)
        where = (username, endpoint, method, url, response.status_code)
        assert response.status_code < 500, where
        if ACCESS[endpoint] in API:  # a session cookie is no API credential
            assert response.status_code == 401, where
        elif ACCESS[endpoint] == ADMIN and username != "admin":
            assert response.status_code == 403, where
        elif endpoint == "auth.logout":  # the last request: signed out, to the sign-in page
            assert sent_to_sign_in(response) and client.get("/screen").status_code == 302, where
        else:
            assert response.status_code not in (401, 403) and not sent_to_sign_in(response), where


def _deactivated(app, runner, monkeypatch):
    assert runner.invoke(args=["users", "deactivate", "clin"]).exit_code == 0


def _deactivated_and_activated_again(app, runner, monkeypatch):
    # Active again, but the sessions that deactivation ended stay ended.
    for command in ("deactivate", "activate"):
        assert runner.invoke(args=["users", command, "clin"]).exit_code == 0


def _reset_by_an_admin(app, runner, monkeypatch):
    result = runner.invoke(args=["users", "reset-password", "clin", "--password", NEW_PASSWORD])
    assert result.exit_code == 0, result.output


def _changed_elsewhere(app, runner, monkeypatch):
    other, token = signed_in(app, "clin")
    form = {"current_password": PASSWORDS["clin"], "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert other.post("/auth/password", data={**form, "csrf_token": token}).status_code == 303


def _signed_out_elsewhere(app, runner, monkeypatch):
    other, _ = signed_in(app, "clin")
    assert sent_to_sign_in(AuthActions(other).logout())


def _idle(app, runner, monkeypatch):
    later = sessions.now() + (app.config["SESSION_IDLE_MINUTES"] + 1) * 60
    monkeypatch.setattr(sessions, "now", lambda: later)


def _too_old(app, runner, monkeypatch):
    # Active all along (seen a minute ago), but past the absolute limit.
    later = sessions.now() + app.config["SESSION_MAX_HOURS"] * 3600 + 60
    monkeypatch.setattr(sessions, "now", lambda: later)
    monkeypatch.setitem(app.config, "SESSION_IDLE_MINUTES", 24 * 60)


NEW_PASSWORD = "a-new-clinician-pass-9"


@pytest.mark.parametrize(
    "end",
    [
        _deactivated,
        _deactivated_and_activated_again,
        _reset_by_an_admin,
        _changed_elsewhere,
        _signed_out_elsewhere,
        _idle,
        _too_old,
    ],
)
def test_an_ended_session_reaches_nothing(app, runner, world, monkeypatch, end):
    client, token = signed_in(app, "clin")
    cookie = client.get_cookie("session").value  # a copy of the session, sent again before each request
    end(app, runner, monkeypatch)
    for endpoint, method, url in requests(app, world, only=BROWSER):
        client.set_cookie("session", cookie)
        response = send(client, method, url, token)
        # The form token taken while the session lived is in the cookie: the sign-in wall answers, not CSRF.
        assert sent_to_sign_in(response), (end.__name__, endpoint, method, url, response.status_code)


def _bearer(secret: str) -> dict:
    return {"headers": {"Authorization": f"Bearer {secret}"}}


def _changed_token(app, username, change) -> str:
    secret = issue_token(app, username)
    with app.app_context():
        change(db.session.scalar(db.select(ApiToken).join(ApiToken.user).where(User.username == username)))
        db.session.commit()
    return secret


def _revoked(app, client):
    return _bearer(_changed_token(app, "clin", lambda token: setattr(token, "revoked_at", utcnow())))


def _expired(app, client):
    return _bearer(_changed_token(app, "clin", lambda token: setattr(token, "expires_at", utcnow() - timedelta(1))))


def _owner_deactivated(app, client):
    return _bearer(_changed_token(app, "admin", lambda token: setattr(token.user, "active", False)))


def _owner_a_directory_leaver(app, client):
    # Found in neither directory group (re-check or sign-in), then given a token on the Users page.
    with app.app_context():
        leaver = User(username="alice", role="admin", source="directory", password_hash="!directory")
        leaver.directory_access = False
        db.session.add(leaver)
        db.session.commit()
    return _bearer(issue_token(app, "alice"))


def _in_the_query_string(app, client):
    secret = issue_token(app, "clin")
    return {"query_string": {"access_token": secret, "token": secret, "bearer": secret}}


def _in_a_cookie(app, client):
    secret = issue_token(app, "clin")
    for name in ("access_token", "token", "Authorization"):
        client.set_cookie(name, secret)
    return {}


def _basic_scheme(app, client):
    return {"headers": {"Authorization": f"Basic {issue_token(app, 'clin')}"}}


@pytest.mark.parametrize(
    "sent",
    [
        _revoked,
        _expired,
        _owner_deactivated,
        _owner_a_directory_leaver,
        _in_the_query_string,
        _in_a_cookie,
        _basic_scheme,
    ],
)
def test_refused_tokens_reach_nothing(app, client, world, sent):
    kwargs = sent(app, client)
    for endpoint, method, url in requests(app, world, only=API | BROWSER):
        response = send(client, method, url, **kwargs)
        where = (sent.__name__, endpoint, method, url, response.status_code)
        if ACCESS[endpoint] in API:
            assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized", where
        else:  # a form without its CSRF token is refused before the sign-in wall
            assert sent_to_sign_in(response) or (method != "GET" and response.status_code == 400), where


@pytest.mark.parametrize("username", ["clin", "admin"])
def test_live_tokens_reach_what_their_role_may_and_no_page(app, client, world, username):
    sent = _bearer(issue_token(app, username))
    for endpoint, method, url in requests(app, world, only=API | BROWSER):
        response = send(client, method, url, **sent)
        where = (username, endpoint, method, url, response.status_code)
        assert response.status_code < 500, where
        if ACCESS[endpoint] in BROWSER:  # a token is no session
            assert sent_to_sign_in(response) or (method != "GET" and response.status_code == 400), where
        elif ACCESS[endpoint] == ADMIN_TOKEN and username != "admin":
            assert response.status_code == 403, where
        else:
            assert response.status_code not in (401, 403), where


def test_a_clinician_reaches_no_other_clinicians_film(app, world):
    """Every route that takes a prediction's id, given another clinician's upload (IDOR)."""
    client, token = signed_in(app, "clin")
    api = _bearer(issue_token(app, "clin"))
    ids = {**world, "prediction_id": world["theirs"], "id": world["theirs"]}
    films = [r.endpoint for r in app.url_map.iter_rules() if "prediction_id" in r.arguments] + ["api.get_prediction"]
    checked = 0
    for endpoint, method, url in requests(app, ids, only=BROWSER | API):
        if endpoint not in films:
            continue
        response = send(client, method, url, **api) if ACCESS[endpoint] in API else send(client, method, url, token)
        checked += 1
        assert response.status_code in (403, 404), (endpoint, method, url, response.status_code)
        assert response.mimetype != "image/png" and b"theirs.jpeg" not in response.data, endpoint
    assert checked >= 8
    both = client.get("/screen/results", query_string={"id": [world["prediction_id"], world["theirs"]]})
    assert both.status_code == 403


def test_every_browser_form_refuses_a_request_without_its_csrf_token(app, world):
    client, _ = signed_in(app, "admin")
    checked = 0
    for endpoint, method, url in requests(app, world, only=BROWSER | {PUBLIC}):
        if method == "GET" or endpoint in OWN_CSRF_ANSWER:
            continue
        response = client.open(url, method=method, data={"anything": "1"})
        checked += 1
        assert response.status_code == 400, (endpoint, method, url, response.status_code)
    assert checked >= 15
    assert client.get("/screen").status_code == 200  # still signed in: the sign-out was refused too


def table_rows(app) -> dict:
    """Every row of every table but the audit trail (a look at a film is audited, by design)."""
    with app.app_context():
        tables = [name for name in inspect(db.engine).get_table_names() if name != "audit_events"]
        return {name: db.session.execute(text(f"SELECT * FROM {name}")).all() for name in tables}


# What some frameworks read as the method of a GET or POST; Flask reads none of them.
OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def overridden(client, url, method, **kwargs):
    headers = {**kwargs.pop("headers", {}), **dict.fromkeys(OVERRIDES, method)}
    for sent_as in ("GET", "POST"):
        yield client.open(url, method=sent_as, headers=headers, query_string={"_method": method}, **kwargs)


@pytest.mark.parametrize("username", ["clin", "admin"])
def test_no_page_changes_anything_on_a_get_nor_with_a_method_override(app, world, username):
    # The test client sends neither Sec-Fetch-Site nor a Referer, as another site's navigation would
    # look; the worklist's own link marking a film read is in tests/test_dicom_node.py.
    client, _ = signed_in(app, username)
    before = table_rows(app)
    for endpoint, method, url in requests(app, world, only=BROWSER):
        answers = [client.get(url)] if method == "GET" else overridden(client, url, method)
        for response in answers:
            assert response.status_code < 500, (endpoint, method, url, response.status_code)
        assert table_rows(app) == before, (username, endpoint, method, url)


def test_no_api_delete_by_a_method_override(app, client, world):
    sent = _bearer(issue_token(app, "admin"))
    spare = issue_token(app, "admin")
    with app.app_context():
        spare_id = db.session.scalar(db.select(ApiToken.id).order_by(ApiToken.id.desc()))
    assert client.get("/api/v1/tokens", **sent).status_code == 200  # its last use noted, before the snapshot
    before = table_rows(app)
    ids = {**world, "id": spare_id}
    for endpoint, method, url in requests(app, ids, only=API):
        if method != "DELETE":
            continue
        for response in overridden(client, url, method, **sent):
            assert response.status_code < 500, (endpoint, url, response.status_code)
        assert table_rows(app) == before, (endpoint, url)
    assert client.get("/api/v1/tokens", **_bearer(spare)).status_code == 200


def test_every_page_and_image_is_kept_out_of_caches(app, world):
    client, _ = signed_in(app, "admin")
    api = _bearer(issue_token(app, "admin"))
    for endpoint, method, url in requests(app, world, only=BROWSER | API):
        if method != "GET":
            continue
        response = client.get(url, **(api if ACCESS[endpoint] in API else {}))
        cache = {part.strip() for part in response.headers.get("Cache-Control", "").split(",")}
        assert "no-store" in cache and "public" not in cache, (endpoint, url, response.status_code, cache)
