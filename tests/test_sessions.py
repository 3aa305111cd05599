"""Sessions end when they should: sign-out, password change or reset, deactivation, timeouts."""

import re

import pytest
from flask_wtf import FlaskForm
from sqlalchemy import update

from tests.factories import add_prediction
from tests.helpers import (
    PASSWORDS,
    AuthActions,
    csrf_token,
    held_after_answering,
    in_parallel,
    make_user,
    threadable_app,
)
from webapp.auth import routes as auth_routes
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


def test_a_password_reset_at_the_moment_of_a_password_change_still_ends_that_session(tmp_path, monkeypatch):
    """An administrator resets clin's password (to lock someone out) while, signed in, that someone
    changes it. Both requests read the session version before either wrote, and both wrote the same
    next value: the session the change began went on, with a password of its own choosing or the
    administrator's. Both are held after their form is read."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "admin", "admin")
    clin = make_user(app, "clin", "clinician")
    admin, intruder = app.test_client(), app.test_client()
    admin.post("/auth/login", data={"username": "admin", "password": PASSWORDS["admin"]})
    intruder.post("/auth/login", data={"username": "clin", "password": PASSWORDS["clin"]})
    held_after_answering(monkeypatch, FlaskForm, "validate_on_submit")

    def reset():
        return admin.post(f"/admin/users/{clin}/password", data={"password": "the-admins-new-pass-1"}).status_code

    def change():
        new = "the-intruders-pass-1"
        form = {"current_password": PASSWORDS["clin"], "new_password": new, "confirm": new}
        return intruder.post("/auth/password", data=form).status_code

    in_parallel(reset, change)
    after = intruder.get("/screen")  # signed out, whichever was saved first
    assert after.status_code == 302 and after.headers["Location"].startswith("/auth/login")
    with app.app_context():
        user = db.session.get(User, clin)
        assert user.must_change_password and user.check_password("the-admins-new-pass-1")
        db.session.remove()
        db.engine.dispose()


def test_a_password_change_after_a_sign_out_elsewhere_is_not_made(tmp_path, monkeypatch):
    """The order the test above may not meet: clin signs out on another workstation (every session
    ends) after this request checked the current password and before it saved the new one. The change
    is not made and this browser is signed out too, told why."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    clin = make_user(app, "clin", "clinician")
    browser = app.test_client()
    browser.post("/auth/login", data={"username": "clin", "password": PASSWORDS["clin"]})
    checked = auth_routes.verify_password

    def checked_then_signed_out_elsewhere(password_hash, password):
        answer = checked(password_hash, password)
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(update(User).where(User.id == clin).values(session_version=User.session_version + 1))
        return answer

    monkeypatch.setattr(auth_routes, "verify_password", checked_then_signed_out_elsewhere)
    new = "a-brand-new-password-1"
    response = browser.post(
        "/auth/password", data={"current_password": PASSWORDS["clin"], "new_password": new, "confirm": new}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/auth/login"
    assert "Your password was not changed" in browser.get("/auth/login").get_data(as_text=True)
    assert browser.get("/screen").status_code == 302
    monkeypatch.undo()
    with app.app_context():
        assert db.session.get(User, clin).check_password(PASSWORDS["clin"])
        db.session.remove()
        db.engine.dispose()


def test_a_password_change_sent_twice_at_once_is_made_once_and_stays_signed_in(tmp_path, monkeypatch):
    """Change password double-clicked: the browser shows the second answer. Its compare-and-set finds
    the hash the first one wrote; that is this very change, not a reset elsewhere, so it must not say
    "not changed" and sign the person out. Both are held after reading the form."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "clin", "clinician")
    first = app.test_client()
    first.post("/auth/login", data={"username": "clin", "password": PASSWORDS["clin"]})
    second = copy_of(app, first)
    held_after_answering(monkeypatch, FlaskForm, "validate_on_submit")
    new = "a-brand-new-password-1"
    form = {"current_password": PASSWORDS["clin"], "new_password": new, "confirm": new}

    def change(browser):
        return lambda: browser.post("/auth/password", data=form).headers["Location"]

    assert in_parallel(change(first), change(second)) == ["/screen", "/screen"]
    monkeypatch.undo()
    assert [b.get("/screen").status_code for b in (first, second)] == [200, 200]
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="password_changed").count() == 1
        db.session.remove()
        db.engine.dispose()


def test_a_password_change_sent_again_says_it_was_made(app, client, auth, clinician_user):
    """Found by the admin pages' review: Change password double-clicked, the second POST arriving once
    the first was done (or the form sent again from the back button), carried the page's token, which
    the change's fresh session no longer takes; the browser showed its answer, "Nothing was saved: this
    form had expired", read as if the password were still the old one."""
    auth.login("clin")
    token = csrf_token(client, "/auth/password")
    new = "a-brand-new-password-1"
    form = {"csrf_token": token, "current_password": PASSWORDS["clin"], "new_password": new, "confirm": new}
    assert client.post("/auth/password", data=form).status_code == 303
    again = client.post("/auth/password", data=form)
    assert again.status_code == 303 and again.headers["Location"] == "/screen"
    said = client.get("/screen").get_data(as_text=True)
    assert auth_routes.CHANGED_ALREADY in said and "had expired" not in said
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="password_changed").count() == 1
        assert db.session.get(User, clinician_user).check_password(new)
    # Any other stale form is refused as before: the change's sentence is for the password form only.
    assert "had expired" in client.post("/preferences/theme", data={"csrf_token": token}).get_data(as_text=True)


def test_a_stale_password_form_with_no_change_made_is_refused_as_expired(client, auth, clinician_user):
    auth.login("clin")
    form = {"csrf_token": "stale", "current_password": PASSWORDS["clin"], "new_password": "x" * 12, "confirm": "x"}
    refused = client.post("/auth/password", data=form)
    assert refused.status_code == 400 and "had expired" in refused.get_data(as_text=True)
