"""Sessions end when they should: sign-out, password change or reset, deactivation, timeouts."""

import re

import pytest

from tests.factories import add_prediction
from tests.helpers import PASSWORDS, AuthActions, csrf_token
from webapp.auth import sessions
from webapp.extensions import db
from webapp.models import AuditEvent, Feedback, User

PAGES = ["/screen", "/history/", "/predictions/{pid}"]


@pytest.fixture
def prediction_id(app, clinician_user) -> int:
    with app.app_context():
        return add_prediction(clinician_user)


def copy_of(app, client):
    """Another browser holding a copy of `client`'s session cookie (as a thief would)."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def feedback_post(client, pid: int, token: str):
    return client.post(f"/predictions/{pid}/feedback", data={"csrf_token": token, "label": "PNEUMONIA", "comment": "x"})


def assert_refused(client, pid: int, token: str, app) -> None:
    # The POST first: its CSRF token is still valid for the copied cookie, so only the session check stops it.
    response = feedback_post(client, pid, token)
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    for page in PAGES:
        response = client.get(page.format(pid=pid))
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"], page
    with app.app_context():
        assert db.session.query(Feedback).count() == 0


def test_copied_cookie_is_refused_after_sign_out(app, client, auth, prediction_id):
    auth.login()
    token = csrf_token(client, "/screen")  # the form token in the copied cookie's session
    thief = copy_of(app, client)
    assert thief.get("/screen").status_code == 200  # the copy works while the session lives
    auth.logout()
    assert_refused(thief, prediction_id, token, app)


def test_copied_cookie_feedback_post_works_before_and_not_after(app, client, auth, prediction_id):
    auth.login()
    thief = copy_of(app, client)
    token = csrf_token(thief, f"/predictions/{prediction_id}")
    assert feedback_post(thief, prediction_id, token).status_code == 303
    with app.app_context():
        db.session.query(Feedback).delete()
        db.session.commit()
    auth.logout()
    assert_refused(thief, prediction_id, token, app)


def test_sign_out_ends_the_users_other_sessions(app, client, auth, clinician_user):
    auth.login()
    other = app.test_client()
    AuthActions(other).login()
    auth.logout()
    assert other.get("/screen").status_code == 302


def test_admin_password_reset_ends_old_sessions(app, client, auth, admin_user, clinician_user, prediction_id):
    auth.login()
    token = csrf_token(client, "/screen")
    admin = app.test_client()
    AuthActions(admin).login("admin")
    reset = admin.post(
        f"/admin/users/{clinician_user}/password",
        data={"csrf_token": csrf_token(admin, "/admin/users"), "password": "a-brand-new-password"},
    )
    assert reset.status_code == 303
    assert_refused(client, prediction_id, token, app)


def test_cli_password_reset_ends_old_sessions(app, client, auth, runner, prediction_id):
    auth.login()
    token = csrf_token(client, "/screen")
    result = runner.invoke(args=["users", "reset-password", "clin", "--password", "a-brand-new-password"])
    assert result.exit_code == 0, result.output
    assert_refused(client, prediction_id, token, app)


def test_deactivation_from_admin_page_ends_sessions(app, client, auth, admin_user, clinician_user):
    auth.login()
    admin = app.test_client()
    AuthActions(admin).login("admin")
    admin.post(
        f"/admin/users/{clinician_user}/active", data={"csrf_token": csrf_token(admin, "/admin/users"), "active": "0"}
    )
    with app.app_context():
        db.session.get(User, clinician_user).active = True  # reactivated: the old session still must not return
        db.session.commit()
    assert client.get("/screen").status_code == 302


def test_a_double_clicked_deactivate_leaves_the_account_deactivated(app, client, auth, admin_user, clinician_user):
    """The button toggled: a double-click on Deactivate (the second POST arriving once the first was
    saved) turned the account of someone who had left back on. The form now says which state it wants."""
    auth.login("admin")
    page = client.get("/admin/users").get_data(as_text=True)
    button = re.search(rf'action="/admin/users/{clinician_user}/active">(.*?)</form>', page, re.S).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', button))
    assert "Deactivate" in button
    client.post(f"/admin/users/{clinician_user}/active", data=fields)
    second = client.post(f"/admin/users/{clinician_user}/active", data=fields, follow_redirects=True)
    assert "User clin was already deactivated." in second.get_data(as_text=True)
    with app.app_context():
        assert not db.session.get(User, clinician_user).active
        trail = db.session.query(AuditEvent).filter_by(target="clin").all()
        assert [event.action for event in trail if event.action.startswith("user_")] == ["user_deactivated"]


def test_idle_timeout(app, client, auth, clinician_user, monkeypatch):
    auth.login()
    start = sessions.now()
    monkeypatch.setattr(sessions, "now", lambda: start + 29 * 60)
    assert client.get("/screen").status_code == 200  # activity keeps the session alive ...
    monkeypatch.setattr(sessions, "now", lambda: start + 58 * 60)
    assert client.get("/screen").status_code == 200
    monkeypatch.setattr(sessions, "now", lambda: start + 89 * 60)  # ... 31 idle minutes end it
    response = client.get("/screen")
    assert response.status_code == 302
    assert "without activity" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_absolute_timeout_even_when_active(app, client, auth, clinician_user, monkeypatch):
    app.config.update(SESSION_MAX_HOURS=2, SESSION_IDLE_MINUTES=30)
    auth.login()
    start = sessions.now()
    for minutes in range(20, 120, 20):
        monkeypatch.setattr(sessions, "now", lambda m=minutes: start + m * 60)
        assert client.get("/screen").status_code == 200
    monkeypatch.setattr(sessions, "now", lambda: start + 121 * 60)
    assert client.get("/screen").status_code == 302


def test_csrf_token_rotates_at_sign_in(app, client, auth, clinician_user, prediction_id):
    before = csrf_token(client, "/auth/login")
    with client.session_transaction() as state:
        raw_before = state["csrf_token"]
    auth.login()
    assert csrf_token(client, "/screen")
    with client.session_transaction() as state:
        assert state["csrf_token"] != raw_before
    # A token from before the sign-in no longer passes.
    assert feedback_post(client, prediction_id, before).status_code == 400
    with app.app_context():
        assert db.session.query(Feedback).count() == 0


def test_changing_ones_password_keeps_this_session_and_ends_the_others(app, client, auth, clinician_user):
    auth.login()
    other = app.test_client()
    AuthActions(other).login()
    response = client.post(
        "/auth/password",
        data={
            "csrf_token": csrf_token(client, "/auth/password"),
            "current_password": PASSWORDS["clin"],
            "new_password": "my-own-new-passphrase",
            "confirm": "my-own-new-passphrase",
        },
    )
    assert response.status_code == 303
    assert client.get("/screen").status_code == 200
    assert other.get("/screen").status_code == 302
    with app.app_context():
        assert User.by_username("clin").check_password("my-own-new-passphrase")


def test_cookie_from_before_session_versions_is_refused(app, client, auth, clinician_user):
    # A cookie signed by the previous release (user id only, no version or times) ends at the upgrade.
    auth.login()
    with client.session_transaction() as state:
        for key in (sessions.VERSION, sessions.SIGNED_IN_AT, sessions.SEEN_AT):
            state.pop(key)
    assert client.get("/screen").status_code == 302


def test_a_pages_own_refresh_does_not_keep_the_session_alive(app, client, auth, clinician_user, monkeypatch):
    """The worklist refreshes itself every 30 s: left open at an empty workstation, it must still
    sign out after the idle timeout."""
    auth.login()
    page = client.get("/worklist").get_data(as_text=True)
    refresh = re.search(r'http-equiv="refresh" content="\d+; url=([^"]+)"', page).group(1)
    assert "auto_refresh=1" in refresh
    start = sessions.now()
    for minutes in range(1, 31):
        monkeypatch.setattr(sessions, "now", lambda m=minutes: start + m * 60)
        assert client.get(refresh).status_code == 200
    monkeypatch.setattr(sessions, "now", lambda: start + 31 * 60)
    assert client.get(refresh).status_code == 302
    assert client.get("/screen").status_code == 302


def test_a_form_sent_after_the_session_ended_says_so_and_leads_back_to_its_page(
    app, client, auth, clinician_user, prediction_id, monkeypatch
):
    """A review typed while the session timed out: the sign-in page says it was not saved, and
    signing in returns to the page the form was on (it used to return to the form's POST-only
    address, a 405 page, with no word that the review was lost)."""
    auth.login()
    page = f"/predictions/{prediction_id}"
    token = csrf_token(client, page)
    start = sessions.now()
    monkeypatch.setattr(sessions, "now", lambda: start + 31 * 60)
    response = client.post(
        f"{page}/feedback",
        data={"csrf_token": token, "label": "PNEUMONIA", "comment": "typed before the timeout"},
        headers={"Referer": f"http://localhost{page}"},
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/auth/login?next={page}"
    sign_in_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "without activity" in sign_in_page and "was not saved" in sign_in_page
    signed_in = client.post(
        response.headers["Location"],
        data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": csrf_token(client, "/auth/login")},
    )
    assert signed_in.headers["Location"] == page and client.get(page).status_code == 200
    with app.app_context():
        assert db.session.query(Feedback).count() == 0


def test_a_form_sent_without_any_session_goes_to_sign_in(app, client, clinician_user, prediction_id):
    """The browser dropped the session cookie (the absolute timeout, a restart): the form's CSRF
    check fails, but the reason to give is the sign-in, not an 'expired form' error page."""
    page = f"/predictions/{prediction_id}"
    response = client.post(
        f"{page}/feedback",
        data={"csrf_token": "stale", "label": "PNEUMONIA", "comment": "x"},
        headers={"Referer": f"http://localhost{page}"},
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/auth/login?next={page}"
    assert "was not saved" in client.get(response.headers["Location"]).get_data(as_text=True)
    # A referrer from another site is not followed after sign-in.
    foreign = client.post("/preferences/theme", data={"theme": "dark"}, headers={"Referer": "http://evil.example/x"})
    assert foreign.headers["Location"] == "/auth/login"


def test_the_upload_script_hears_that_the_session_ended(app, client, auth, clinician_user, monkeypatch):
    """The upload page posts with Accept: application/json; it showed 'The upload failed (HTTP 200)'
    when the answer was the sign-in page."""
    auth.login()
    token = csrf_token(client, "/screen")
    start = sessions.now()
    monkeypatch.setattr(sessions, "now", lambda: start + 31 * 60)
    for data in ({"csrf_token": token}, {"csrf_token": "stale"}):
        response = client.post("/screen", data=data, headers={"Accept": "application/json"})
        assert response.status_code == 401
        assert response.json["error"]["code"] == "signed_out"
        assert "signed out" in response.json["error"]["message"]
        assert "files were not sent" in response.json["error"]["message"]
    elsewhere = client.get("/history/", headers={"Accept": "application/json"})
    assert elsewhere.status_code == 401 and "files" not in elsewhere.json["error"]["message"]


def test_an_expired_form_while_signed_in_says_nothing_was_saved(app, client, auth, clinician_user, prediction_id):
    """Signed in again in another tab: this tab's form carries the old token. The page says what
    happened to the review and how to send it again."""
    auth.login()
    response = feedback_post(client, prediction_id, "token-from-before")
    assert response.status_code == 400
    assert "Nothing was saved" in response.get_data(as_text=True)


def test_an_expired_sign_in_form_shows_the_sign_in_page_again(app, client, clinician_user):
    """The sign-in page left open while the browser dropped its cookie: it answered with an error page
    about a form that was not saved; now the sign-in page again, its `next` kept, saying why."""
    response = client.post(
        "/auth/login?next=/history/", data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": "old"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/auth/login?next=/history/"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The sign-in page had expired" in page and 'name="password"' in page
