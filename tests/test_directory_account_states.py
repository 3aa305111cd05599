"""Directory accounts in the states Active Directory refuses a bind for (docs/sign-in.md, "Expired,
locked and other refused accounts"), against tests/ranged_directory.py answering the person's bind
exactly as Active Directory does: invalidCredentials (49) and a diagnostic message whose `data` code
says why. Until 5 December every one of them read "Unknown username or wrong password.", so a clinician
whose Windows password had expired retried it into the app's own delays and the directory's lockout.
"""

import time

import pytest
from ldap3 import MODIFY_DELETE, MODIFY_REPLACE

from tests.helpers import AuthActions
from tests.ldap_server import DIRECTORY_PEOPLE, PASSWORD_POLICY_ENTRY, PEOPLE
from tests.ranged_directory import RangedDirectory, ad_settings
from webapp.extensions import db
from webapp.models import AuditEvent, SignInCounter, User

GROUPS = "OU=Groups,DC=ad,DC=test"
PERSON = "CN=Dana Example,OU=Staff,DC=ad,DC=test"
PASSWORD = "Dana's-password-1"
WRONG = "Unknown username or wrong password."


def refusal(code: str) -> tuple[int, str]:
    """Active Directory's answer to a simple bind refused for `code` (Windows Server 2019's wording)."""
    return 49, f"80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563\x00"


@pytest.fixture
def active_directory(app):
    """Starts the stand-in with the person's bind answered as given; returns a function doing that."""
    servers = []

    def start(code: str) -> RangedDirectory:
        server = RangedDirectory(PERSON, [f"CN=CXR Clinicians,{GROUPS}"], person_bind=refusal(code))
        servers.append(server)
        app.config.update(ad_settings(server, LDAP_CLINICIAN_GROUP_DN=f"CN=CXR Clinicians,{GROUPS}"))
        return server

    yield start
    for server in servers:
        server.close()


def failed_sign_in(app) -> str:
    with app.app_context():
        return db.session.query(AuditEvent).filter_by(action="sign_in_failed").one().details


# Refused only after the password was checked and found right: the page may say what is wrong.
SAID_AFTER_THE_RIGHT_PASSWORD = [
    ("532", "Your directory password has expired", "password expired"),
    ("773", "Your directory password must be changed before it can be used", "password must be changed"),
    ("701", "Your directory account has expired", "account expired"),
    ("533", "Your directory account is disabled", "account disabled"),
    ("530", "may not sign in at this time of day", "outside its logon hours"),
    ("531", "limited to certain computers", "not permitted from this server"),
]


@pytest.mark.parametrize(("code", "page", "trail"), SAID_AFTER_THE_RIGHT_PASSWORD)
def test_a_state_the_directory_reports_only_after_the_right_password_is_said(
    app, client, active_directory, code, page, trail
):
    active_directory(code)
    response = AuthActions(client).login("dana", PASSWORD)
    assert response.status_code == 401
    text = response.get_data(as_text=True)
    assert page in text and WRONG not in text
    assert failed_sign_in(app) == f"directory: {trail} (Active Directory data {code})"
    assert client.get("/screen").status_code == 302


@pytest.mark.parametrize(("code", "trail"), [("775", "account locked out"), ("52e", None), ("525", None)])
def test_a_state_the_directory_reports_for_any_password_says_no_more_than_a_wrong_one(
    app, client, active_directory, code, trail
):
    active_directory(code)
    response = AuthActions(client).login("dana", "any-password-at-all")
    assert response.status_code == 401 and WRONG in response.get_data(as_text=True)
    # The trail (read by administrators, not by whoever typed the name) says why a lockout refused it.
    assert failed_sign_in(app) == (f"directory: {trail} (Active Directory data {code})" if trail else WRONG)


def test_an_expired_password_does_not_run_into_the_apps_own_delays(app, client, active_directory):
    active_directory("532")
    allowance = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    for _ in range(allowance + 2):  # the person retries, as they do, before reading the message
        response = AuthActions(client).login("dana", PASSWORD)
        assert response.status_code == 401 and "Your directory password has expired" in response.get_data(as_text=True)
    with app.app_context():  # the right password, each time: no failure counted for the name or the address
        assert db.session.query(SignInCounter).filter(SignInCounter.failures > 0).count() == 0


def test_a_locked_out_account_counts_as_a_failure(app, client, active_directory):
    active_directory("775")
    allowance = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    for _ in range(allowance):
        assert AuthActions(client).login("dana", "guess").status_code == 401
    assert AuthActions(client).login("dana", "guess").status_code == 429  # it may be someone guessing


# OpenLDAP's password policy overlay (tests/ldap_server.py, PASSWORD_POLICY_ENTRY) says the same in the
# bind response's password policy control, sent only to a client that asks for it. A password set by
# an administrator (pwdReset, with pwdMustChange) binds successfully: until 5 December the app signed
# in with it, although the directory allows that password nothing but its own change.


@pytest.fixture
def openldap(app, password_policy_ldap_server):
    app.config.update(password_policy_ldap_server.app_settings())
    return password_policy_ldap_server


def test_openldap_a_password_set_by_an_administrator_must_be_changed_before_it_signs_in(app, client, openldap):
    with openldap.admin() as conn:
        assert conn.modify(f"uid=alice,{PEOPLE}", {"pwdReset": [(MODIFY_REPLACE, ["TRUE"])]}), conn.result
    response = AuthActions(client).login("alice", DIRECTORY_PEOPLE["alice"][0])
    assert response.status_code == 401
    assert "Your directory password must be changed before it can be used" in response.get_data(as_text=True)
    assert client.get("/screen").status_code == 302
    assert failed_sign_in(app) == "directory: password must be changed (password policy: changeAfterReset)"
    with app.app_context():
        assert User.by_username("alice") is None  # no account made on a password the directory restricts


def test_openldap_an_expired_password_is_said(app, client, openldap):
    alice, password = f"uid=alice,{PEOPLE}", DIRECTORY_PEOPLE["alice"][0]
    with openldap.admin() as conn:  # set over LDAP, it has a pwdChangedTime: it expires 2 seconds later
        assert conn.modify(alice, {"userPassword": [(MODIFY_REPLACE, [password])]}), conn.result
        assert conn.modify(alice, {"pwdReset": [(MODIFY_DELETE, [])]}), conn.result
    time.sleep(3)
    response = AuthActions(client).login("alice", "not-her-password")
    assert WRONG in response.get_data(as_text=True)  # a wrong password is told nothing more
    response = AuthActions(client).login("alice", password)
    assert "Your directory password has expired" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="sign_in_failed").order_by(AuditEvent.id).all()[
            -1
        ].details == ("directory: password expired (password policy: passwordExpired)")


def test_openldap_a_locked_account_is_told_what_a_wrong_password_is(app, client, openldap):
    for _ in range(int(PASSWORD_POLICY_ENTRY["pwdMaxFailure"])):
        AuthActions(client).login("carol", "guess-guess")
    response = AuthActions(client).login("carol", DIRECTORY_PEOPLE["carol"][0])  # locked: even the right one
    assert response.status_code == 401 and WRONG in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="sign_in_failed").order_by(AuditEvent.id).all()[
            -1
        ].details == ("directory: account locked out (password policy: accountLocked)")
