"""What identifies a directory account: the entry's objectGUID / entryUUID beside its name.

Found by review on 5 December: with the name alone, LDAP_URL pointed at another directory (two test
OpenLDAP servers, each with an alice) let the second alice sign in to the first alice's account, with
its history, role and live API token, and the re-check left it alone. Each server made by slapadd gives
its entries their own entryUUID, so the session's directory and a test's own are that case.
"""

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from tests.helpers import AuthActions, issue_token
from tests.ldap_server import CLINICIANS_GROUP, DIRECTORY_PEOPLE, HIDE_IDENTITY, PEOPLE, started_server
from webapp.auth import directory as directory_module
from webapp.auth.credentials import NAME_OF_EARLIER_ACCOUNT
from webapp.auth.recheck import recheck_directory_accounts
from webapp.extensions import db
from webapp.models import DIRECTORY, AuditEvent, User

ALICE_PASSWORD = DIRECTORY_PEOPLE["alice"][0]


@pytest.fixture
def directory(app, ldap_server):
    app.config.update(ldap_server.app_settings())
    return ldap_server


def _entry_uuid(server, uid: str) -> str:
    with server.admin() as conn:
        assert conn.search(f"uid={uid},{PEOPLE}", "(objectClass=*)", attributes=["entryUUID"])
        return str(conn.entries[0].entryUUID.value).lower()


def _signed_in_alice(app, client, auth) -> dict[str, str]:
    """alice of the current directory signed in, with an API token: the bearer header."""
    assert auth.login("alice", ALICE_PASSWORD).status_code == 302
    bearer = {"Authorization": f"Bearer {issue_token(app, 'alice')}"}
    assert client.get("/screen").status_code == 200 and client.get("/api/v1/tokens", headers=bearer).status_code == 200
    return bearer


def _trail(app, *actions: str) -> list[tuple[str, str, str, str]]:
    with app.app_context():
        rows = db.session.query(AuditEvent).filter(AuditEvent.action.in_(actions)).order_by(AuditEvent.id)
        return [(e.actor, e.action, e.target, e.details) for e in rows]


def test_another_directorys_alice_is_refused_and_the_first_alices_access_ends(
    app, client, auth, directory, own_ldap_server, caplog
):
    bearer = _signed_in_alice(app, client, auth)
    first, second = _entry_uuid(directory, "alice"), _entry_uuid(own_ldap_server, "alice")
    assert first != second
    with app.app_context():
        assert User.by_username("alice").directory_entry_id == first
    app.config.update(own_ldap_server.app_settings())  # LDAP_URL pointed at another directory
    for _ in range(2):
        response = AuthActions(app.test_client()).login("alice", ALICE_PASSWORD)
        assert response.status_code == 401
        assert NAME_OF_EARLIER_ACCOUNT.split("name ")[1] in response.get_data(as_text=True)
    # The first alice's session and token end: the directory no longer vouches for her under that name.
    assert client.get("/screen").status_code == 302
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
    why = f"the directory entry under this name is another one (entry {second}; the account's is {first})"
    assert _trail(app, "access_ended", "token_revoked", "sign_in_failed") == [
        ("directory", "token_revoked", "alice", f"token 1 ''; directory at sign-in: {why}"),
        ("directory", "access_ended", "alice", f"directory at sign-in: {why}"),
        ("alice", "sign_in_failed", "", why),
        ("alice", "sign_in_failed", "", why),
    ]
    assert "directory sign-in refused for 'alice'" in caplog.text
    with app.app_context():
        (account,) = db.session.query(User).filter_by(source=DIRECTORY).all()
        assert (account.username, account.directory_entry_id, account.directory_access) == ("alice", first, False)
        assert recheck_directory_accounts() == 0  # ended already: nothing more to end
    # The mistake undone (LDAP_URL back): the first alice signs in to her own account again.
    app.config.update(directory.app_settings())
    assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
    with app.app_context():
        assert User.by_username("alice").directory_access


def test_the_recheck_ends_the_access_of_an_account_whose_name_is_another_entrys_now(
    app, client, auth, directory, own_ldap_server, caplog
):
    bearer = _signed_in_alice(app, client, auth)
    first, second = _entry_uuid(directory, "alice"), _entry_uuid(own_ldap_server, "alice")
    app.config.update(own_ldap_server.app_settings())
    with app.app_context():
        assert recheck_directory_accounts() == 1
        assert recheck_directory_accounts() == 0  # once
    assert client.get("/screen").status_code == 302
    assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
    why = f"directory re-check: {directory_module.someone_else(first, second)}"
    assert _trail(app, "access_ended", "token_revoked") == [
        ("directory", "token_revoked", "alice", f"token 1 ''; {why}"),
        ("directory", "access_ended", "alice", why),
    ]
    assert caplog.text.count("directory re-check ended 'alice''s access") == 1


def test_an_account_from_before_the_upgrade_gets_its_entrys_identity_at_sign_in_or_recheck(
    app, client, auth, directory
):
    uuid = _entry_uuid(directory, "alice")
    assert auth.login("alice", ALICE_PASSWORD).status_code == 302
    for how in ("sign-in", "re-check"):
        with app.app_context():
            User.by_username("alice").directory_entry_id = None  # as 0015 leaves an existing account
            db.session.commit()
        if how == "sign-in":
            assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
        else:
            with app.app_context():
                assert recheck_directory_accounts() == 0
        with app.app_context():
            assert User.by_username("alice").directory_entry_id == uuid
    assert client.get("/screen").status_code == 200  # recording it ends nothing
    assert _trail(app, "directory_identity_recorded") == [
        ("directory", "directory_identity_recorded", "alice", f"directory at sign-in, directory entry {uuid}"),
        ("directory", "directory_identity_recorded", "alice", f"directory re-check, directory entry {uuid}"),
    ]


def test_a_directory_that_hides_the_identity_signs_in_by_name_as_before_and_says_so_once(
    app, client, auth, tmp_path, caplog
):
    server = started_server(tmp_path / "slapd-hidden", extra_access=HIDE_IDENTITY)
    directory_module._hidden_identity.cache_clear()
    try:
        app.config.update(server.app_settings())
        for _ in range(2):
            assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
        with app.app_context():
            assert recheck_directory_accounts() == 0
            assert User.by_username("alice").directory_entry_id is None
    finally:
        server.stop()
    assert caplog.text.count("the directory shows no objectGUID or entryUUID") == 1


class _Entry:
    entry_dn = "CN=Alice,OU=Staff,DC=ad,DC=hospital,DC=example"

    def __init__(self, **raw):
        self.entry_raw_attributes = raw


def test_an_active_directory_objectguid_is_kept_in_the_canonical_text_form():
    # Windows writes a GUID's first three fields little-endian: {00112233-4455-6677-8899-aabbccddeeff}
    # is sent as these bytes, and PowerShell's Get-ADUser shows it as that text.
    guid = bytes.fromhex("33221100554477668899aabbccddeeff")
    assert directory_module.entry_identity(_Entry(objectGUID=[guid])) == "00112233-4455-6677-8899-aabbccddeeff"
    entry_uuid = b"A0B1C2D3-0000-1111-2222-333344445555"
    assert directory_module.entry_identity(_Entry(entryUUID=[entry_uuid])) == entry_uuid.decode().lower()


def test_the_administrator_renames_the_earlier_account_and_the_new_holder_gets_their_own(
    app, client, auth, directory, own_ldap_server, runner
):
    _signed_in_alice(app, client, auth)
    first, second = _entry_uuid(directory, "alice"), _entry_uuid(own_ldap_server, "alice")
    app.config.update(own_ldap_server.app_settings())
    assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 401
    for refused, message in [
        (["users", "rename", "nobody", "x1"], "No user named 'nobody'"),
        (["users", "rename", "alice", "a"], "2 to 64 letters"),
        (["users", "rename", "alice", "ALICE"], "already exists"),
        (["users", "rename", "alice", "pacs"], "is reserved"),
    ]:
        result = runner.invoke(args=refused)
        assert result.exit_code == 1 and message in result.output, result.output
    result = runner.invoke(args=["users", "rename", "alice", "alice.2019"])
    assert result.exit_code == 0 and "Renamed alice to alice.2019" in result.output, result.output
    assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
    with app.app_context():
        rows = db.session.query(User).filter_by(source=DIRECTORY).order_by(User.id)
        assert [(u.username, u.directory_entry_id) for u in rows] == [("alice.2019", first), ("alice", second)]
    renamed = _trail(app, "user_renamed")
    assert [(action, target, details) for _, action, target, details in renamed] == [
        ("user_renamed", "alice.2019", "was alice")
    ]


def test_a_deactivated_entry_signs_in_under_none_of_its_names(app, directory, runner):
    """Found by the security review on 5 December: with LDAP_USER_FILTER comparing two attributes (docs:
    uid or mail) a first sign-in is named as typed, so alice, deactivated, signed in by her cn to a second,
    active account of the same entry (entryUUID), her deactivation left behind."""
    app.config["LDAP_USER_FILTER"] = "(|(uid={username})(cn={username}))"
    assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
    assert runner.invoke(args=["users", "deactivate", "alice"]).exit_code == 0
    for name in ("alice", "Alice Example"):
        assert AuthActions(app.test_client()).login(name, ALICE_PASSWORD).status_code == 401, name
    with app.app_context():
        assert [(u.username, u.active) for u in db.session.query(User)] == [("alice", False)]
    assert _trail(app, "sign_in_failed")[-1][3] == "account deactivated (password right): alice, under another name"
    # Active again, each name signs in (to an account per name, as such a filter names them).
    assert runner.invoke(args=["users", "activate", "alice"]).exit_code == 0
    assert AuthActions(app.test_client()).login("Alice Example", ALICE_PASSWORD).status_code == 302


def test_a_deactivated_entry_renamed_in_the_directory_stays_deactivated(app, own_ldap_server, runner):
    """The same with one attribute: the entry's uid changed (same entryUUID) reached a new, active account."""
    app.config.update(own_ldap_server.app_settings())
    assert AuthActions(app.test_client()).login("alice", ALICE_PASSWORD).status_code == 302
    assert runner.invoke(args=["users", "deactivate", "alice"]).exit_code == 0
    with own_ldap_server.admin() as conn:
        assert conn.modify_dn(f"uid=alice,{PEOPLE}", "uid=alice2"), conn.result
        moved = {"member": [(MODIFY_DELETE, [f"uid=alice,{PEOPLE}"]), (MODIFY_ADD, [f"uid=alice2,{PEOPLE}"])]}
        assert conn.modify(CLINICIANS_GROUP, moved), conn.result
    assert AuthActions(app.test_client()).login("alice2", ALICE_PASSWORD).status_code == 401
    with app.app_context():
        assert [(u.username, u.active) for u in db.session.query(User)] == [("alice", False)]
