"""Directory sign-in against a real OpenLDAP server (tests/ldap_server.py)."""

import re
from datetime import datetime

import pytest
from argon2 import PasswordHasher
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from tests.helpers import AuthActions, held_after_answering, in_parallel, issue_token, make_user, threadable_app
from tests.ldap_server import DIRECTORY_PEOPLE, PEOPLE, free_loopback_port, started_server
from webapp import create_app
from webapp.auth import directory as directory_module
from webapp.auth.recheck import recheck_directory_accounts
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.jobs.queue import jobs
from webapp.models import DIRECTORY, NO_LOCAL_PASSWORD, AuditEvent, User

ADMIN_PAGE = "/admin/users"


@pytest.fixture
def directory(app, ldap_server):
    app.config.update(ldap_server.app_settings())
    return ldap_server


def sign_in_as(auth, uid: str, password: str | None = None):
    return auth.login(uid, password or DIRECTORY_PEOPLE[uid][0])


def test_clinicians_group_member_signs_in_as_clinician(app, client, auth, directory):
    assert "hospital network account" in client.get("/auth/login").get_data(as_text=True)
    response = sign_in_as(auth, "alice")
    assert response.status_code == 302 and response.headers["Location"].endswith("/screen")
    assert client.get("/screen").status_code == 200
    assert client.get(ADMIN_PAGE).status_code == 403
    with app.app_context():
        user = User.by_username("alice")
        assert user.role == "clinician" and user.source == DIRECTORY
        assert not user.check_password(DIRECTORY_PEOPLE["alice"][0])  # no usable local password
        assert db.session.query(AuditEvent).filter_by(action="sign_in", actor="alice").count() == 1


def test_admins_group_member_signs_in_as_admin(app, client, auth, directory):
    assert sign_in_as(auth, "bob").status_code == 302
    assert client.get(ADMIN_PAGE).status_code == 200
    with app.app_context():
        assert User.by_username("bob").role == "admin"


def test_member_of_neither_group_is_refused(app, client, auth, directory):
    response = sign_in_as(auth, "carol")
    assert response.status_code == 401
    assert "not in a group that may use CXR Screen" in response.get_data(as_text=True)
    assert client.get("/screen").status_code == 302
    with app.app_context():
        assert User.by_username("carol") is None


@pytest.mark.parametrize("password", ["wrong-password-here", " "])
def test_wrong_password_is_refused(app, client, auth, directory, password):
    response = sign_in_as(auth, "alice", password)
    assert response.status_code in (400, 401)  # a blank password fails the form before the directory
    assert client.get("/screen").status_code == 302


@pytest.mark.parametrize("name", ["*", "alice)(uid=*", "ali*", "nobody-here"])
def test_filter_characters_in_names_match_nobody(client, auth, directory, name):
    response = auth.login(name, DIRECTORY_PEOPLE["alice"][0])
    assert response.status_code == 401
    assert "Unknown username or wrong password" in response.get_data(as_text=True)


def test_names_are_case_insensitive_with_one_local_row(app, auth, client, directory):
    assert sign_in_as(auth, "alice").status_code == 302
    auth.logout()
    assert auth.login("ALICE", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    with app.app_context():
        assert db.session.query(User).filter(db.func.lower(User.username) == "alice").count() == 1


FULL_WIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"  # what OpenLDAP's matching takes for "alice"


def test_every_spelling_the_directory_matches_reaches_one_row_and_its_deactivation(app, client, auth, directory):
    assert sign_in_as(auth, "alice").status_code == 302
    auth.logout()
    assert auth.login(FULL_WIDTH_ALICE, DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    auth.logout()
    with app.app_context():
        assert [u.username for u in db.session.query(User).filter_by(source=DIRECTORY)] == ["alice"]
        User.by_username("alice").active = False
        db.session.commit()
    for spelling in ("alice", "ALICE", FULL_WIDTH_ALICE):
        response = auth.login(spelling, DIRECTORY_PEOPLE["alice"][0])
        assert response.status_code == 401 and "wrong password" in response.get_data(as_text=True), spelling
    with app.app_context():
        assert db.session.query(User).count() == 1
        # The trail says why (the page does not): until 5 December it said "wrong password".
        failed = db.session.scalars(db.select(AuditEvent.details).filter_by(action="sign_in_failed")).all()
        assert failed == ["account deactivated (password right)"] * 3
        # And whose account it was, whichever spelling reached it: until 5 December "ALICE" and the
        # full-width spelling were recorded as "(unknown)" (found by the security review).
        actors = db.session.scalars(db.select(AuditEvent.actor).filter_by(action="sign_in_failed")).all()
        assert actors == ["alice"] * 3


def test_the_sign_in_delays_count_every_spelling_of_a_name_as_one(app, directory):
    """Found by the security review on 5 December: the per-account counter was keyed on the typed name
    lower-cased, so after alice's 5 wrong passwords her full-width spelling, or ALİCE, which the directory
    takes for alice, had its own fresh allowance and signed in at once (32 spellings of a five-letter name)."""
    assert AuthActions(app.test_client()).login("AL\u0130CE", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
    for attempt in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        assert AuthActions(app.test_client()).login("alice", f"wrong-{attempt}").status_code == 401
    for spelling in ("alice", "ALICE", FULL_WIDTH_ALICE, "\uff41lice", "AL\u0130CE"):
        response = AuthActions(app.test_client()).login(spelling, DIRECTORY_PEOPLE["alice"][0])
        assert response.status_code == 429 and "Too many failed sign-in attempts" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("user_filter", "attribute"),
    [
        ("(uid={username})", "uid"),
        ("(&(objectClass=person)(sAMAccountName={username}))", "samaccountname"),
        ("(|(uid={username})(mail={username}))", None),  # two attributes: the typed name, folded
    ],
)
def test_the_name_attribute_is_read_from_the_filter(user_filter, attribute):
    assert directory_module.name_attribute(user_filter) == attribute


def test_local_account_wins_over_a_directory_entry_of_the_same_name(app, client, auth, directory):
    # "bob" exists locally as a clinician: the directory's admin bob cannot take that account over.
    with app.app_context():
        local = User(username="bob", role="clinician")
        local.set_password("local-bob-password")
        db.session.add(local)
        db.session.commit()
    assert sign_in_as(auth, "bob").status_code == 401
    assert auth.login("bob", "local-bob-password").status_code == 302
    assert client.get(ADMIN_PAGE).status_code == 403


def test_a_directory_entry_named_pacs_is_refused(app, client, auth, directory, caplog):
    """PACS is the user every film from the PACS shows, and what the history's ?user=PACS finds: a
    directory account of that name signed in as a clinician, and its films passed for the PACS's."""
    dn, password = _dn("pacs"), "pacs-directory-pass"
    group = directory.app_settings()["LDAP_CLINICIAN_GROUP_DN"]
    with directory.admin() as conn:
        person = {"uid": "pacs", "cn": "Pacs Example", "sn": "Example", "userPassword": password}
        assert conn.add(dn, ["inetOrgPerson"], person), conn.result
        assert conn.modify(group, {"member": [(MODIFY_ADD, [dn])]}), conn.result
    try:
        for typed in ("pacs", "PACS"):
            response = auth.login(typed, password)
            assert response.status_code == 401, typed
            assert "reserved" in response.get_data(as_text=True)
            assert client.get("/screen").status_code == 302
        assert "is reserved for films from the PACS" in caplog.text
        with app.app_context():
            assert db.session.query(User).count() == 0
    finally:
        with directory.admin() as conn:
            conn.modify(group, {"member": [(MODIFY_DELETE, [dn])]})
            conn.delete(dn)


def test_role_follows_the_groups_at_every_sign_in(app, client, auth, directory):
    assert sign_in_as(auth, "alice").status_code == 302
    assert client.get(ADMIN_PAGE).status_code == 403
    script_token = issue_token(app, "alice")
    group = directory.app_settings()["LDAP_ADMIN_GROUP_DN"]
    with directory.admin() as conn:
        assert conn.modify(group, {"member": [(MODIFY_ADD, [_dn("alice")])]}), conn.result
    try:
        elsewhere = app.test_client()  # alice signs in again at another workstation
        assert sign_in_as(AuthActions(elsewhere), "alice").status_code == 302
        assert elsewhere.get(ADMIN_PAGE).status_code == 200
        # The role change ended the session that still had the clinician role, and the token issued
        # to the clinician: it must not become an administrator's.
        assert client.get("/screen").status_code == 302
        assert client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {script_token}"}).status_code == 401
    finally:
        with directory.admin() as conn:
            conn.modify(group, {"member": [(MODIFY_DELETE, [_dn("alice")])]})
    with app.app_context():
        assert User.by_username("alice").role == "admin"


@pytest.mark.parametrize("server_size_limit", ["", "sizelimit 1\n"])
def test_a_name_two_entries_answer_to_is_nobody(app, auth, client, tmp_path, server_size_limit):
    # With the directory's own size limit at 1, it sent one of the two entries (and sizeLimitExceeded):
    # that entry's password signed in as "alice", whichever person the name was meant for.
    server = started_server(tmp_path / "slapd", extra_access=server_size_limit)
    try:
        app.config.update(server.app_settings())
        with server.admin() as conn:
            second = {"uid": "alice", "cn": "Alice Other", "sn": "Other", "userPassword": "other-alice-pass"}
            assert conn.add(f"cn=Alice Other,{PEOPLE}", ["inetOrgPerson"], second), conn.result
        for password in (DIRECTORY_PEOPLE["alice"][0], "other-alice-pass"):
            response = auth.login("alice", password)
            assert response.status_code == 401 and "Unknown username or wrong password" in response.get_data(
                as_text=True
            )
        with app.app_context():
            assert User.by_username("alice") is None
    finally:
        server.stop()


def _dn(uid: str) -> str:
    return f"uid={uid},ou=people,dc=hospital,dc=test"


def test_directory_down_local_admin_still_signs_in(app, client, auth, admin_user, own_ldap_server):
    app.config.update(own_ldap_server.app_settings())
    assert sign_in_as(auth, "alice").status_code == 302  # the directory works ...
    auth.logout()
    own_ldap_server.stop()  # ... then goes away
    response = sign_in_as(auth, "alice")
    assert response.status_code == 503
    assert "staff directory cannot be reached" in response.get_data(as_text=True)
    assert client.get("/screen").status_code == 302
    # The break-glass local admin is not affected.
    assert auth.login("admin").status_code == 302
    assert client.get(ADMIN_PAGE).status_code == 200


def test_unreachable_directory_address_is_a_clear_message(app, auth, client):
    app.config.update(LDAP_URL=f"ldap://127.0.0.1:{free_loopback_port()}", LDAP_USER_BASE="dc=x")
    response = auth.login("someone", "some-password-here")
    assert response.status_code == 503
    assert "staff directory cannot be reached" in response.get_data(as_text=True)


def test_ldaps_with_the_directorys_ca(app, client, auth, tls_ldap_server):
    app.config.update(tls_ldap_server.app_settings(), LDAP_URL=tls_ldap_server.ldaps_url)
    app.config["LDAP_CA_FILE"] = str(tls_ldap_server.ca_file)
    assert sign_in_as(auth, "alice").status_code == 302


def test_starttls_with_the_directorys_ca(app, client, auth, tls_ldap_server):
    app.config.update(tls_ldap_server.app_settings(), LDAP_STARTTLS=True, LDAP_CA_FILE=str(tls_ldap_server.ca_file))
    assert sign_in_as(auth, "alice").status_code == 302


@pytest.mark.parametrize("starttls", [False, True])
def test_untrusted_directory_certificate_is_refused(app, client, auth, tls_ldap_server, starttls, caplog):
    # Without the CA the certificate cannot be verified: no password is sent, directory users get the message.
    app.config.update(tls_ldap_server.app_settings(), LDAP_CA_FILE="")
    app.config.update(LDAP_STARTTLS=True) if starttls else app.config.update(LDAP_URL=tls_ldap_server.ldaps_url)
    response = sign_in_as(auth, "alice")
    assert response.status_code == 503
    assert "staff directory cannot be reached" in response.get_data(as_text=True)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


@pytest.mark.parametrize("starttls", [False, True])
def test_certificate_for_another_host_is_refused(app, client, auth, misnamed_tls_ldap_server, starttls, caplog):
    server = misnamed_tls_ldap_server
    app.config.update(server.app_settings(), LDAP_CA_FILE=str(server.ca_file))
    app.config.update(LDAP_STARTTLS=True) if starttls else app.config.update(LDAP_URL=server.ldaps_url)
    assert sign_in_as(auth, "alice").status_code == 503
    assert "127.0.0.2" in caplog.text or "hostname" in caplog.text.lower()


@pytest.mark.parametrize("name", ["alice", "carol", "nobody-here"])
def test_directory_and_unknown_names_cost_one_argon2_check_like_local_ones(auth, directory, name, monkeypatch):
    checks = []
    real = PasswordHasher.verify
    monkeypatch.setattr(PasswordHasher, "verify", lambda self, h, p: checks.append(h) or real(self, h, p))
    auth.login(name, "wrong-password-here")
    assert len(checks) == 1


GOOD_SETTINGS = {
    "LDAP_URL": "ldap://127.0.0.1:389",
    "LDAP_USER_BASE": "ou=people,dc=x",
    "LDAP_CLINICIAN_GROUP_DN": "cn=clinicians,dc=x",
}


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"LDAP_URL": "http://dc01"}, "must start with ldap://"),
        ({"LDAP_URL": "ldaps://dc01", "LDAP_STARTTLS": True}, "applies to ldap:// URLs"),
        ({"LDAP_USER_FILTER": "(uid=*)"}, "must contain {username}"),
        ({"LDAP_USER_FILTER": "(&({attr}={username}))"}, "no braces other than"),
        ({"LDAP_USER_BASE": ""}, "LDAP_USER_BASE"),
        ({"LDAP_CLINICIAN_GROUP_DN": ""}, "the groups give the roles"),
        ({"LDAP_CA_FILE": "/no/such/ca.pem"}, "is not a file"),
    ],
)
def test_misconfigured_directory_stops_the_app_at_start(tmp_path, settings, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **GOOD_SETTINGS, **settings})


@pytest.mark.parametrize("minutes", [60, -1])
def test_a_recheck_interval_the_schedule_cannot_take_stops_the_app_directory_or_not(tmp_path, minutes):
    with pytest.raises(RuntimeError, match="DIRECTORY_RECHECK_MINUTES"):
        create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "DIRECTORY_RECHECK_MINUTES": minutes})


def test_usable_directory_settings_start(tmp_path):
    assert create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **GOOD_SETTINGS}).config["LDAP_URL"]


def test_starttls_refused_by_the_server_sends_no_password(app, auth, directory, caplog):
    # The shared test directory has no certificate, so it cannot do StartTLS: no clear-text bind instead.
    app.config.update(LDAP_STARTTLS=True)
    response = sign_in_as(auth, "alice")
    assert response.status_code == 503
    assert "StartTLS" in caplog.text


# A groupOfNames needs a member: while alice is out, the group holds a placeholder entry.
PLACEHOLDER = "cn=placeholder,ou=groups,dc=hospital,dc=test"


def _take_out_of_clinicians(directory, uid: str) -> None:
    with directory.admin() as conn:
        group = directory.app_settings()["LDAP_CLINICIAN_GROUP_DN"]
        change = {"member": [(MODIFY_ADD, [PLACEHOLDER]), (MODIFY_DELETE, [_dn(uid)])]}
        assert conn.modify(group, change), conn.result


def _put_back_in_clinicians(directory, uid: str) -> None:
    with directory.admin() as conn:
        group = directory.app_settings()["LDAP_CLINICIAN_GROUP_DN"]
        conn.modify(group, {"member": [(MODIFY_ADD, [_dn(uid)]), (MODIFY_DELETE, [PLACEHOLDER])]})


def test_the_periodic_recheck_ends_a_leavers_session_and_tokens_once(app, client, auth, directory):
    assert sign_in_as(auth, "alice").status_code == 302
    token = issue_token(app, "alice")
    bearer = {"Authorization": f"Bearer {token}"}
    with app.app_context():
        assert recheck_directory_accounts() == 0  # still a clinician: nothing changes
    assert client.get("/screen").status_code == 200 and client.get("/api/v1/tokens", headers=bearer).status_code == 200
    _take_out_of_clinicians(directory, "alice")
    try:
        with app.app_context():
            assert recheck_directory_accounts() == 1
            assert recheck_directory_accounts() == 0  # ended once, not at every run
            ended = db.session.query(AuditEvent).filter_by(action="access_ended", target="alice").all()
            assert [(e.actor, e.details) for e in ended] == [
                ("directory", "directory re-check: in neither group, or disabled")
            ]
            # The token went with it, by the directory's hand: it was in the trail as revoked by "cli:NAME",
            # someone at the server's shell.
            revoked = db.session.query(AuditEvent).filter_by(action="token_revoked", target="alice").all()
            assert [e.actor for e in revoked] == ["directory"]
        assert client.get("/screen").status_code == 302
        assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
        # Found following docs/sign-in.md: `users list` and the Users page still said "active".
        leaver = "no access (ended by the directory: see the audit trail)"
        assert f"alice\tclinician\t{leaver}\tdirectory" in app.test_cli_runner().invoke(args=["users", "list"]).output
        make_user(app, "admin", "admin")
        AuthActions(admin := app.test_client()).login("admin")
        assert f'<td data-label="State">{leaver}</td>' in admin.get("/admin/users").get_data(as_text=True)
    finally:
        _put_back_in_clinicians(directory, "alice")
    # Back in the group, she signs in as before and is checked again from then on.
    assert sign_in_as(AuthActions(app.test_client()), "alice").status_code == 302
    with app.app_context():
        assert User.by_username("alice").directory_access


def test_a_leaver_found_at_sign_in_is_in_the_trail_as_the_recheck_would_write_it(app, client, auth, directory):
    # Refused at sign-in for being in neither group: sessions and tokens ended, but the trail had no
    # access_ended row (the re-check then passed the account by) and the tokens' revocation said "cli".
    assert sign_in_as(auth, "alice").status_code == 302
    issue_token(app, "alice")
    _take_out_of_clinicians(directory, "alice")
    try:
        for _ in range(2):
            assert sign_in_as(AuthActions(app.test_client()), "alice").status_code == 401
        assert client.get("/screen").status_code == 302
        with app.app_context():
            assert recheck_directory_accounts() == 0
            trail = [
                (e.actor, e.action, e.details)
                for e in db.session.query(AuditEvent)
                .filter(AuditEvent.action.in_(("access_ended", "token_revoked")), AuditEvent.target == "alice")
                .order_by(AuditEvent.id)
            ]
    finally:
        _put_back_in_clinicians(directory, "alice")
    why = "directory at sign-in: in neither group, or disabled"
    assert trail == [("directory", "token_revoked", f"token 1 ''; {why}"), ("directory", "access_ended", why)]


def test_a_leaver_refused_at_sign_in_while_the_recheck_asks_about_them_is_ended_once(
    app, client, auth, directory, monkeypatch
):
    # The re-check reads the accounts with access, then asks the directory about each; a sign-in of the
    # same leaver, refused in that moment, ended the access first. Both wrote access_ended.
    from webapp.auth import directory as directory_module

    assert sign_in_as(auth, "alice").status_code == 302
    _take_out_of_clinicians(directory, "alice")
    lookup = directory_module.lookup

    def refused_sign_in_meanwhile(name):
        assert sign_in_as(AuthActions(app.test_client()), "alice").status_code == 401
        return lookup(name)

    monkeypatch.setattr(directory_module, "lookup", refused_sign_in_meanwhile)
    try:
        with app.app_context():
            assert recheck_directory_accounts() == 0  # the sign-in had ended it
            ended = db.session.query(AuditEvent).filter_by(action="access_ended", target="alice").all()
            assert [e.details for e in ended] == ["directory at sign-in: in neither group, or disabled"]
    finally:
        _put_back_in_clinicians(directory, "alice")


def test_a_directory_that_cannot_be_asked_ends_nobodys_access(app, client, auth, own_ldap_server, caplog):
    # However long it lasts (docs/sign-in.md, "Directory outage"): sessions and tokens go on, with a warning.
    app.config.update(own_ldap_server.app_settings())
    assert sign_in_as(auth, "alice").status_code == 302
    bearer = {"Authorization": f"Bearer {issue_token(app, 'alice')}"}
    own_ldap_server.stop()
    with app.app_context():
        for _ in range(2):
            assert recheck_directory_accounts() == 0
        assert db.session.query(AuditEvent).filter_by(action="access_ended").count() == 0
    assert caplog.text.count("directory re-check stopped, nobody's access changed") == 2
    assert client.get("/screen").status_code == 200
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 200


def test_the_recheck_is_on_the_workers_schedule(app, directory):
    with app.app_context():
        due = {task.name for task in jobs().huey.read_periodic(datetime(2026, 12, 3, 10, 15))}
        assert "auth.directory_recheck" in due  # every DIRECTORY_RECHECK_MINUTES (15)
        assert "auth.directory_recheck" not in {
            task.name for task in jobs().huey.read_periodic(datetime(2026, 12, 3, 10, 16))
        }


def test_a_directory_name_differing_from_a_local_one_only_in_case_is_refused(app, client, auth, directory):
    """Found by review: the Users page refuses "alice" beside a local "Alice" (one person's trail split
    in two, or someone passing for another), but directory sign-in as alice created the row "alice"
    beside it; the check (User.name_taken) was not applied to a directory account's first sign-in."""
    with app.app_context():
        local = User(username="Alice", role="admin")
        local.set_password("the-local-alice-password")
        db.session.add(local)
        db.session.commit()
    response = sign_in_as(auth, "alice")
    assert response.status_code == 401 and "already used here by another account" in response.get_data(as_text=True)
    with app.app_context():
        assert [u.username for u in db.session.query(User).order_by(User.id)] == ["Alice"]
        failed = db.session.query(AuditEvent).filter_by(action="sign_in_failed").one()
        assert "already used here" in failed.details


def test_a_first_sign_in_sent_twice_at_once_signs_in_twice(tmp_path, ldap_server, monkeypatch):
    """A directory user's first sign-in sent twice at the same moment (a double-click, two tabs): both
    found no local row and both inserted one; the second broke the unique name and answered a 500.
    Both requests are held after that look until both have made it."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False, **ldap_server.app_settings())
    held_after_answering(monkeypatch, User, "name_taken")

    def sign_in():
        form = {"username": "alice", "password": DIRECTORY_PEOPLE["alice"][0]}
        return app.test_client().post("/auth/login", data=form).status_code

    assert in_parallel(sign_in, sign_in) == [302, 302]
    with app.app_context():
        assert db.session.query(User).filter_by(username="alice").count() == 1
        assert db.session.query(AuditEvent).filter_by(action="user_created", target="alice").count() == 1
        db.session.remove()
        db.engine.dispose()


def test_a_first_sign_in_beside_a_local_account_created_at_once_in_another_case(tmp_path, ldap_server, monkeypatch):
    """alice's first directory sign-in while an administrator creates a local "Alice": both passed the
    case-insensitive "name taken" check before either was saved, and the case-sensitive unique name
    let both rows in. Now whichever is saved first keeps the name and the other is told it is taken."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False, **ldap_server.app_settings())
    with app.app_context():
        admin = User(username="admin", role="admin")
        admin.set_password("admin-password-1")
        db.session.add(admin)
        db.session.commit()
    held_after_answering(monkeypatch, User, "name_taken")

    def sign_in():
        form = {"username": "alice", "password": DIRECTORY_PEOPLE["alice"][0]}
        response = app.test_client().post("/auth/login", data=form)
        return "directory", response.status_code, "already used here" in response.get_data(as_text=True)

    def create():
        client = app.test_client()
        client.post("/auth/login", data={"username": "admin", "password": "admin-password-1"})
        form = {"username": "Alice", "role": "clinician", "password": "a-long-password"}
        response = client.post("/admin/users", data=form)
        return "page", response.status_code, "That username is taken" in response.get_data(as_text=True)

    assert in_parallel(sign_in, create) in (
        [("directory", 302, False), ("page", 400, True)],
        [("directory", 401, True), ("page", 303, False)],
    )
    with app.app_context():
        assert db.session.query(User).filter(db.func.lower(User.username) == "alice").count() == 1
        db.session.remove()
        db.engine.dispose()


def test_a_first_sign_in_refused_by_the_database_at_the_last_moment_is_told_the_name_is_taken(
    tmp_path, ldap_server, monkeypatch
):
    """The order the test above may not meet: a local "Alice" saved between the first sign-in's check
    and its insert. The database refuses the row; the person is told the name is taken (was a 500)."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False, **ldap_server.app_settings())
    with app.app_context():
        db.session.add(User(username="Alice", role="clinician", password_hash="x"))
        db.session.commit()
    monkeypatch.setattr(User, "name_taken", staticmethod(lambda name: False))  # the check came first
    form = {"username": "alice", "password": DIRECTORY_PEOPLE["alice"][0]}
    response = app.test_client().post("/auth/login", data=form)
    assert response.status_code == 401 and "already used here" in response.get_data(as_text=True)
    with app.app_context():
        assert [u.username for u in db.session.query(User)] == ["Alice"]
        db.session.remove()
        db.engine.dispose()


def test_a_sign_in_sent_twice_at_once_after_a_role_change_changes_the_role_once(tmp_path, ldap_server, monkeypatch):
    """alice, an administrator here, moved to the clinicians' group, signs in with a double-click:
    each request found the old role, so each wrote `role_changed` and ended all access, the second
    ending the session the first had just begun. Both are held after each look-up of the account."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False, **ldap_server.app_settings())
    with app.app_context():
        db.session.add(User(username="alice", role="admin", source=DIRECTORY, password_hash=NO_LOCAL_PASSWORD))
        db.session.commit()
    held_after_answering(monkeypatch, User, "by_username")
    browsers = [app.test_client(), app.test_client()]

    def sign_in(browser):
        form = {"username": "alice", "password": DIRECTORY_PEOPLE["alice"][0]}
        return lambda: browser.post("/auth/login", data=form).status_code

    assert in_parallel(*(sign_in(b) for b in browsers)) == [302, 302]
    monkeypatch.undo()
    assert [b.get("/screen").status_code for b in browsers] == [200, 200]
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="role_changed").count() == 1
        assert User.by_username("alice").role == "clinician"
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    "setting", ["LDAP_USER_BASE", "LDAP_CLINICIAN_GROUP_DN"], ids=["people-base-missing", "group-missing"]
)
def test_a_base_the_directory_does_not_have_is_no_answer_about_anyone(app, client, auth, directory, setting, caplog):
    """Found by review: the search's noSuchObject was read as "no entry", so a typo in LDAP_USER_BASE (or
    an OU renamed in the directory) made the next re-check end every directory account's access and
    revoke its tokens as if everyone had left, audited "no longer in the directory"; a missing group,
    as if nobody were in it. It is the directory not answering, as documented: nothing changes."""
    assert sign_in_as(auth, "alice").status_code == 302
    bearer = {"Authorization": f"Bearer {issue_token(app, 'alice')}"}
    app.config[setting] = "ou=renamed,dc=hospital,dc=test"
    with app.app_context():
        assert recheck_directory_accounts() == 0
        assert (
            db.session.query(AuditEvent).filter(AuditEvent.action.in_(("access_ended", "token_revoked"))).count() == 0
        )
        assert User.by_username("alice").role == "clinician"
    assert "nobody's access changed" in caplog.text and "noSuchObject" in caplog.text
    assert client.get("/screen").status_code == 200 and client.get("/api/v1/tokens", headers=bearer).status_code == 200
    response = sign_in_as(AuthActions(app.test_client()), "alice")
    assert response.status_code == 503 and "staff directory cannot be reached" in response.get_data(as_text=True)
