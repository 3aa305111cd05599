"""Directory sign-in switched off (LDAP_URL emptied, the app restarted) after directory accounts exist.

Found by review on 5 December: alice's browser session and API token went on working for good, and
the re-check, with no directory to ask, ended nothing, so a leaver who left after the switch kept
access. Directory accounts now fail closed in the app (User.cut_off). Changing LDAP_URL in the app's config is
what a restart with it emptied does: every check reads it at the request.
"""

import logging

import pytest

from tests.helpers import AuthActions, csrf_token, issue_token
from tests.ldap_server import DIRECTORY_PEOPLE
from webapp.auth.recheck import recheck_directory_accounts
from webapp.extensions import db
from webapp.models import DIRECTORY, AuditEvent, User

OFF = "directory sign-in switched off (LDAP_URL empty)"
LOCAL_PASSWORD = "kept-as-a-local-account"


@pytest.fixture
def directory(app, ldap_server):
    app.config.update(ldap_server.app_settings())
    return ldap_server


def _signed_in_alice(app, client, auth) -> dict[str, str]:
    """alice signed in through the directory, with an API token: the bearer header."""
    assert auth.login("alice", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    bearer = {"Authorization": f"Bearer {issue_token(app, 'alice')}"}
    assert client.get("/screen").status_code == 200 and client.get("/api/v1/tokens", headers=bearer).status_code == 200
    return bearer


def _access_ended(app) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.query(AuditEvent).filter_by(action="access_ended", target="alice").all()
        return [(e.actor, e.details) for e in rows]


def test_switched_off_a_directory_accounts_session_and_token_are_refused_and_say_why(
    app, client, auth, directory, admin_user, caplog
):
    bearer = _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    caplog.set_level(logging.WARNING)
    page = client.get("/screen", follow_redirects=True)
    assert page.request.path == "/auth/login"
    assert "directory sign-in is switched off" in page.get_data(as_text=True)
    answer = client.get("/api/v1/tokens", headers=bearer)
    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert error["code"] == "unauthorized" and "directory sign-in is switched off" in error["message"]
    assert "users make-local alice" in error["message"]
    again = client.get("/api/v1/tokens", headers=bearer)  # revoked now, and still told why
    assert again.status_code == 401 and "directory sign-in is switched off" in again.get_json()["error"]["message"]
    # Once in the trail and the log, by the directory's hand, whichever met it first.
    assert _access_ended(app) == [("directory", OFF)]
    assert f"directory account alice has no access: {OFF}" in caplog.text
    with app.app_context():
        assert recheck_directory_accounts() == 0
        revoked = db.session.query(AuditEvent).filter_by(action="token_revoked", target="alice").one()
        assert revoked.actor == "directory" and OFF in revoked.details
    # Local accounts, the break-glass administrator first, are not affected.
    assert AuthActions(app.test_client()).login("admin").status_code == 302


def test_a_worker_without_ldap_url_ends_nobodys_access_and_says_why(app, client, auth, directory, caplog):
    """The job worker's LDAP_URL alone does not say directory sign-in is off (the worker may lack the
    app's settings): ending every account there would revoke everyone's tokens after each sign-in.
    It warns instead; the app, where it is off, refuses the accounts at every use."""
    bearer = _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    with app.app_context():
        assert recheck_directory_accounts() == 0
    assert "1 directory account(s) are not re-checked" in caplog.text
    assert _access_ended(app) == []
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401


def test_switched_off_the_sign_in_page_says_directory_accounts_cannot_sign_in(app, client, auth, directory):
    assert auth.login("alice", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    auth.logout()
    app.config["LDAP_URL"] = ""
    page = client.get("/auth/login").get_data(as_text=True)
    assert "Directory sign-in is switched off" in page
    answer = auth.login("alice", DIRECTORY_PEOPLE["alice"][0])
    # The same answer as for any name (what is typed cannot be checked), the page's note saying why.
    assert answer.status_code == 401
    assert "Unknown username or wrong password" in answer.get_data(as_text=True)
    assert "Directory sign-in is switched off" in answer.get_data(as_text=True)
    with app.app_context():
        failed = db.session.query(AuditEvent).filter_by(action="sign_in_failed", actor="alice").one()
        assert failed.details == OFF
    assert _access_ended(app) == []  # a sign-in attempt, anyone's, ends nothing (next test)


def test_switched_off_a_sign_in_attempt_by_anyone_revokes_nothing(app, client, auth, directory):
    """Found by the security review on 5 December: one sign-in attempt for alice, with any password, by
    anyone, revoked her API tokens for good (an integration's script broke once LDAP_URL was set again)."""
    bearer = _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    assert AuthActions(app.test_client()).login("alice", "a-guess-by-anyone").status_code == 401
    assert _access_ended(app) == []
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="token_revoked").count() == 0
    app.config.update(directory.app_settings())
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 200
    assert client.get("/screen").status_code == 200


def test_a_site_that_never_had_directory_accounts_shows_no_such_note(client):
    assert "switched off" not in client.get("/auth/login").get_data(as_text=True)


def test_switched_off_the_users_page_says_so_and_issues_no_token(app, client, auth, directory, admin_user):
    _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    admin = app.test_client()
    assert AuthActions(admin).login("admin").status_code == 302
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "staff directory (switched off: no access)" in page and "users make-local NAME" in page
    with app.app_context():
        alice_id = User.by_username("alice").id
    form = {"name": "script", "days": "30", "once": "x", "csrf_token": csrf_token(admin, "/admin/users")}
    answer = admin.post(f"/admin/users/{alice_id}/tokens", data=form, follow_redirects=True)
    assert "No token issued: alice is an account from the staff directory" in answer.get_data(as_text=True)
    with app.app_context():
        assert len(User.by_username("alice").tokens) == 1


def test_switched_off_an_administrator_keeps_an_account_by_making_it_local(app, client, auth, directory, runner):
    bearer = _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    assert client.get("/screen").status_code == 302
    listed = runner.invoke(args=["users", "list"]).output
    assert "alice\tclinician\tno access (directory sign-in switched off)\tdirectory" in listed
    refused = runner.invoke(args=["users", "token", "alice"])
    assert refused.exit_code != 0 and "directory sign-in is switched off" in refused.output
    reset = runner.invoke(args=["users", "reset-password", "alice", "--password", LOCAL_PASSWORD])
    assert reset.exit_code != 0 and "users make-local alice" in reset.output
    made = runner.invoke(args=["users", "make-local", "alice", "--password", LOCAL_PASSWORD])
    assert made.exit_code == 0, made.output
    assert "alice is now a local clinician account" in made.output
    with app.app_context():
        user = User.by_username("alice")
        assert user.source == "local" and user.must_change_password and user.directory_access
        made_local = db.session.query(AuditEvent).filter_by(action="user_made_local", target="alice").one()
        assert made_local.actor == "cli:operator" and "0 live API token(s) kept" in made_local.details
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401  # revoked when access ended
    new_token = runner.invoke(args=["users", "token", "alice"]).output.strip().splitlines()[-1]
    assert client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    assert auth.login("alice", LOCAL_PASSWORD).status_code == 302
    again = runner.invoke(args=["users", "make-local", "alice", "--password", LOCAL_PASSWORD])
    assert again.exit_code != 0 and "already a local account" in again.output


def test_make_local_refuses_an_account_under_the_reserved_name(app, runner):
    with app.app_context():
        db.session.add(User(username="pacs", role="clinician", source=DIRECTORY, active=False, password_hash="!d"))
        db.session.commit()
    result = runner.invoke(args=["users", "make-local", "pacs", "--password", LOCAL_PASSWORD])
    assert result.exit_code != 0 and "reserved" in result.output
    with app.app_context():
        assert User.by_username("pacs").from_directory


def test_switched_on_again_the_old_tokens_stay_revoked(app, client, auth, directory):
    """LDAP_URL set again, maybe to another directory whose alice is someone else: her sign-in must not
    bring back the tokens of the alice who held the account before, nor the re-check."""
    bearer = _signed_in_alice(app, client, auth)
    app.config["LDAP_URL"] = ""
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
    app.config.update(directory.app_settings())
    with app.app_context():
        assert recheck_directory_accounts() == 0
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
    assert auth.login("alice", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    assert client.get("/screen").status_code == 200
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
