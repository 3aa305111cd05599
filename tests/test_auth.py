import pytest

from tests.helpers import csrf_token
from webapp.extensions import db
from webapp.models import AuditEvent, User

PROTECTED_PAGES = [
    "/",
    "/screen",
    "/screen/results?id=1",
    "/history/",
    "/predictions/1",
    "/predictions/1/image.png",
    "/predictions/1/heatmap.png",
    "/admin/history",
    "/admin/history.csv",
    "/admin/summary",
    "/admin/users",
    "/admin/audit",
]
ADMIN_PAGES = ["/admin/history", "/admin/history.csv", "/admin/summary", "/admin/users", "/admin/audit"]


@pytest.mark.parametrize("path", PROTECTED_PAGES)
def test_anonymous_users_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


@pytest.mark.parametrize("path", ["/auth/login", "/static/app.css", "/healthz"])
def test_public_paths(client, path):
    assert client.get(path).status_code == 200


# The only endpoints an anonymous caller may reach: sign-in, static files and the two probes that
# load balancers and orchestrators call without credentials.
PUBLIC_ENDPOINTS = {"auth.login", "static", "health.healthz", "health.readyz"}


def anonymous_requests(app):
    """One anonymous request per route and method the app registers, with made-up URL arguments."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = rule.build(dict.fromkeys(rule.arguments, 1), append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def test_every_other_route_refuses_anonymous_callers(app, client):
    # Walks the URL map, so a route added later without a guard fails here.
    checked = 0
    for endpoint, method, url in anonymous_requests(app):
        response = client.open(url, method=method)
        checked += 1
        if url.startswith("/api/"):
            assert response.status_code == 401, (endpoint, method, url, response.status_code)
        else:
            # Forms refuse a POST without a CSRF token before the sign-in wall does.
            allowed = {302, 400} if method == "POST" else {302}
            assert response.status_code in allowed, (endpoint, method, url, response.status_code)
            if response.status_code == 302:
                assert "/auth/login" in response.headers["Location"], (endpoint, url)
    assert checked >= len(PROTECTED_PAGES)


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_clinician_gets_403_on_admin_pages(client, auth, clinician_user, path):
    auth.login()
    response = client.get(path)
    assert response.status_code == 403
    assert "You do not have access" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_reaches_admin_pages(client, auth, admin_user, path):
    auth.login("admin")
    assert client.get(path).status_code == 200


def test_login_and_logout(client, auth, clinician_user):
    response = auth.login()
    assert response.status_code == 302 and response.headers["Location"].endswith("/screen")
    assert client.get("/screen").status_code == 200
    auth.logout()
    assert client.get("/screen").status_code == 302


def test_wrong_password(client, auth, clinician_user):
    response = auth.login("clin", "wrong-password")
    assert response.status_code == 401
    assert "wrong password" in response.get_data(as_text=True)


def test_login_without_csrf_token_is_refused(client, clinician_user):
    response = client.post("/auth/login", data={"username": "clin", "password": "clinician-pass-1"})
    assert response.status_code == 303 and response.headers["Location"] == "/auth/login"  # the form again
    assert client.get("/screen").status_code == 302


def test_logout_requires_csrf(client, auth, clinician_user):
    auth.login()
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/screen").status_code == 200


def test_throttled_per_account(client, auth, clinician_user):
    for _ in range(5):
        assert auth.login("clin", "wrong-password").status_code == 401
    response = auth.login("clin")  # right password, but the account is paused
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.get_data(as_text=True)


def test_throttled_per_address(app, client, auth, clinician_user):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 3
    for name in ("a1", "a2", "a3"):  # three different accounts from one address
        response = client.post(
            "/auth/login",
            data={"username": name, "password": "nope-nope-nope", "csrf_token": csrf_token(client, "/auth/login")},
        )
        assert response.status_code == 401
    assert auth.login("clin").status_code == 429


def test_deactivated_user_cannot_sign_in(app, client, auth, clinician_user):
    """Refused with the message any wrong password gets (the page must not tell a guesser which
    accounts exist or are deactivated), but the audit trail says why: it recorded that same generic
    refusal, so an administrator could not see a leaver trying their old, right password."""
    with app.app_context():
        db.session.get(User, clinician_user).active = False
        db.session.commit()
    for password in (None, "not-the-password"):
        response = auth.login("clin", password)
        page = response.get_data(as_text=True)
        assert response.status_code == 401 and "Unknown username or wrong password." in page
        assert "deactivated" not in page
    with app.app_context():
        failed = db.session.scalars(db.select(AuditEvent).filter_by(action="sign_in_failed").order_by(AuditEvent.id))
        assert [(e.actor, e.details) for e in failed] == [
            ("clin", "account deactivated (password right)"),
            ("clin", "account deactivated (password wrong)"),
        ]


def test_session_of_deactivated_user_ends(app, client, auth, clinician_user):
    auth.login()
    with app.app_context():
        db.session.get(User, clinician_user).active = False
        db.session.commit()
    assert client.get("/screen").status_code == 302


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/history/", "/history/"),
        ("https://evil.example/", "/screen"),
        ("//evil.example/x", "/screen"),
        # urlsplit() drops CR/LF/tab before parsing: the redirect must not carry them (a 500 before)
        ("/a%0D%0Ab", "/screen"),
        ("/%09/evil.example", "/screen"),
    ],
)
def test_next_redirect_stays_on_site(client, clinician_user, target, expected):
    token = csrf_token(client, "/auth/login")
    response = client.post(
        f"/auth/login?next={target}", data={"username": "clin", "password": "clinician-pass-1", "csrf_token": token}
    )
    assert response.headers["Location"] == expected


def test_passwords_are_hashed_with_argon2(app, clinician_user):
    with app.app_context():
        user = db.session.get(User, clinician_user)
        assert user.password_hash.startswith("$argon2id$")
        assert user.check_password("clinician-pass-1") and not user.check_password("x")
