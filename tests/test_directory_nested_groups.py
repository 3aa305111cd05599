"""Nested groups (docs/sign-in.md, "Nested groups") against the real OpenLDAP of tests/ldap_server.py.

Until 5 December only direct membership counted: a person in "Radiology Consultants", itself a member
of the clinicians' group, as hospital IT grants access in Active Directory, was refused. Groups added
here over LDAP get memberOf from the memberof overlay, on people and groups alike, as in Active
Directory: the walk goes up from the person's groups through the groups' own memberOf.
"""

import socket
import threading
from contextlib import contextmanager

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, Connection, Server

from tests.helpers import AuthActions
from tests.ldap_server import ADMINS_GROUP, CLINICIANS_GROUP, DIRECTORY_PEOPLE, PEOPLE, ROOT_DN, ROOT_PASSWORD, SUFFIX
from tests.ranged_directory import RangedDirectory, ad_settings
from webapp.auth import directory as directory_module
from webapp.auth.recheck import recheck_directory_accounts
from webapp.extensions import db
from webapp.models import AuditEvent, User

CAROL = f"uid=carol,{PEOPLE}"  # in neither group directly
ALICE = f"uid=alice,{PEOPLE}"  # directly in the clinicians' group (its member list only, no memberOf)
UNREACHABLE = "staff directory cannot be reached"


def group(name: str) -> str:
    return f"cn={name},ou=groups,{SUFFIX}"


@pytest.fixture
def directory(app, ldap_server):
    app.config.update(ldap_server.app_settings())
    return ldap_server


@contextmanager
def groups(server, new: dict[str, list[str]], added: dict[str, list[str]]):
    """Adds the groups `new` (DN -> members, in that order), then the members `added` to groups old or
    new (a cycle needs a group that exists to point at); takes it all away again, as the session's
    directory is shared."""
    made: list[str] = []
    try:
        with server.admin() as conn:
            for dn, members in new.items():
                assert conn.add(dn, ["groupOfNames"], {"cn": dn[3 : dn.index(",")], "member": members}), conn.result
                made.append(dn)
            for dn, members in added.items():
                assert conn.modify(dn, {"member": [(MODIFY_ADD, members)]}), conn.result
        yield
    finally:
        with server.admin() as conn:
            for dn, members in added.items():
                if dn not in made:
                    conn.modify(dn, {"member": [(MODIFY_DELETE, members)]})
            for dn in reversed(made):
                conn.delete(dn)


def role_of(app, uid: str) -> str | None:
    """The role the re-check's question (lookup) gives `uid` today."""
    with app.app_context():
        answer = directory_module.lookup(uid)
        assert answer.found
        return answer.role


def counted_searches(monkeypatch) -> list[str]:
    """The base of every search the directory code makes from now on."""
    bases: list[str] = []
    search = directory_module._search

    def counting(service, base, *args, **kwargs):
        bases.append(base)
        return search(service, base, *args, **kwargs)

    monkeypatch.setattr(directory_module, "_search", counting)
    return bases


def test_a_person_in_a_group_nested_two_levels_deep_signs_in_with_its_role(app, client, auth, directory, monkeypatch):
    consultants, radiology = group("radiology-consultants"), group("radiology")
    with groups(directory, {consultants: [CAROL], radiology: [consultants]}, {CLINICIANS_GROUP: [radiology]}):
        searches = counted_searches(monkeypatch)
        response = auth.login("carol", DIRECTORY_PEOPLE["carol"][0])
        assert response.status_code == 302 and response.headers["Location"].endswith("/screen")
        assert client.get("/screen").status_code == 200 and client.get("/admin/users").status_code == 403
        with app.app_context():
            assert User.by_username("carol").role == "clinician"
        # Her entry, the admins' member list, then up: one BASE search per group she is in, the
        # clinicians' group included (an admins' group above it would make her an admin). No person's
        # entry and no member list is read on the way (walking down read 9: bob and alice among them).
        assert searches == [PEOPLE, ADMINS_GROUP, consultants, radiology, CLINICIANS_GROUP]


def test_direct_members_and_people_in_neither_group_cost_what_they_did_before_nested_groups(
    app, directory, monkeypatch
):
    # On main: bob 1 search (memberOf names the admins' group), alice 3 (both member lists), carol 3.
    # Walking down from the groups made alice 5 (the admins' group and bob read) and carol 7. (Once an
    # earlier test has put alice back in the clinicians' group over LDAP, her third search reads that
    # group's memberOf instead of its member list: 3 still.)
    searches = counted_searches(monkeypatch)
    for uid, role, made in [
        ("bob", "admin", [PEOPLE]),
        ("alice", "clinician", [PEOPLE, ADMINS_GROUP, CLINICIANS_GROUP]),
        ("carol", None, [PEOPLE, ADMINS_GROUP, CLINICIANS_GROUP]),
    ]:
        searches.clear()
        assert AuthActions(app.test_client()).login(uid, DIRECTORY_PEOPLE[uid][0]).status_code == (302 if role else 401)
        assert searches == made, uid
        assert role_of(app, uid) == role


def test_admin_through_a_nested_group_beats_a_direct_clinician(app, client, auth, directory, monkeypatch):
    on_call = group("on-call-admins")
    with groups(directory, {on_call: [ALICE]}, {ADMINS_GROUP: [on_call]}):
        searches = counted_searches(monkeypatch)
        assert auth.login("alice", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
        assert client.get("/admin/users").status_code == 200
        with app.app_context():
            assert User.by_username("alice").role == "admin"
        # The admins' group found: nothing further read. Alice's memberOf names on-call-admins, and the
        # clinicians' group too once an earlier test has put her back in it over LDAP.
        assert searches[:2] == [PEOPLE, ADMINS_GROUP] and searches[-1] == on_call
        assert set(searches[2:-1]) <= {CLINICIANS_GROUP}
    assert role_of(app, "alice") == "clinician"  # the nested admins' group gone: the direct group again


def test_a_cycle_of_groups_ends_and_answers(app, directory, monkeypatch, caplog):
    a, b, radiology = group("cycle-a"), group("cycle-b"), group("radiology")
    with groups(directory, {a: [CAROL], b: [a], radiology: [ALICE]}, {a: [b], CLINICIANS_GROUP: [radiology]}):
        searches = counted_searches(monkeypatch)
        assert role_of(app, "carol") is None  # A in B, B in A: each read once, carol in neither group
        assert searches == [PEOPLE, ADMINS_GROUP, a, b, CLINICIANS_GROUP]
        assert "not all read" not in caplog.text  # everything was read: no bound involved
        with directory.admin() as conn:  # B into a group of the clinicians' group: found past the cycle
            assert conn.modify(radiology, {"member": [(MODIFY_ADD, [b])]}), conn.result
        searches.clear()
        assert role_of(app, "carol") == "clinician"
        assert searches == [PEOPLE, ADMINS_GROUP, a, b, radiology, CLINICIANS_GROUP]


def root(server) -> Connection:
    """The directory's root, not following referrals (a test's own referral names a host that records)."""
    return Connection(Server(server.url), ROOT_DN, ROOT_PASSWORD, auto_bind=True, auto_referrals=False)


def moved_away(conn, ou: str, group_dn: str, members: list[str], renamed: str) -> None:
    """Leaves `group_dn` in its members' memberOf with no entry there: the group is made in `ou` (an OU
    under the suffix), and the OU renamed to `renamed`, which the memberof overlay does not follow
    below the entry renamed (so too a group deleted before the overlay was loaded)."""
    assert conn.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou}), conn.result
    assert conn.add(group_dn, ["groupOfNames"], {"cn": group_dn[3 : group_dn.index(",")], "member": members})
    assert conn.modify_dn(f"ou={ou},{SUFFIX}", f"ou={renamed}"), conn.result


def test_a_memberof_naming_no_entry_is_skipped(app, own_ldap_server, monkeypatch):
    # Read as a refused search (noSuchObject), the dangling memberOf made every sign-in of carol an outage.
    app.config.update(own_ldap_server.app_settings())
    gone, radiology = f"cn=night-shift,ou=teams,{SUFFIX}", group("radiology")
    with root(own_ldap_server) as conn:  # this test's own directory: nothing to take away afterwards
        moved_away(conn, "teams", gone, [CAROL], renamed="teams-2019")
        assert conn.add(radiology, ["groupOfNames"], {"cn": "radiology", "member": [CAROL]}), conn.result
        assert conn.modify(CLINICIANS_GROUP, {"member": [(MODIFY_ADD, [radiology])]}), conn.result
    searches = counted_searches(monkeypatch)
    assert role_of(app, "carol") == "clinician"
    assert searches == [PEOPLE, ADMINS_GROUP, gone, radiology, CLINICIANS_GROUP]


@pytest.fixture
def elsewhere():
    """A host a referral names: (its URL, what each connection to it sent). A bind carries its DN and
    password."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(5)
                try:
                    received.append(connection.recv(65536))
                except OSError:
                    received.append(b"")

    threading.Thread(target=accept, daemon=True).start()
    yield f"ldap://127.0.0.1:{listener.getsockname()[1]}", received
    listener.close()


def test_a_group_held_by_another_server_is_skipped_and_no_password_follows_the_referral(
    app, own_ldap_server, elsewhere, monkeypatch, caplog
):
    # A memberOf naming a group under a referral entry (another domain of an Active Directory forest, or
    # any host someone who may create referrals names): ldap3 followed the referral and bound there with
    # the service account's DN and password, in clear text on ldap://. It is skipped; nothing goes there.
    url, received = elsewhere
    app.config.update(own_ldap_server.app_settings())
    remote, radiology = f"cn=remote-staff,ou=elsewhere,{SUFFIX}", group("radiology")
    with root(own_ldap_server) as conn:  # this test's own directory: nothing to take away afterwards
        moved_away(conn, "elsewhere", remote, [CAROL], renamed="local")
        referral = {"ou": "elsewhere", "ref": f"{url}/ou=elsewhere,{SUFFIX}"}
        assert conn.add(f"ou=elsewhere,{SUFFIX}", ["referral", "extensibleObject"], referral), conn.result
        assert conn.add(radiology, ["groupOfNames"], {"cn": "radiology", "member": [CAROL]}), conn.result
        assert conn.modify(CLINICIANS_GROUP, {"member": [(MODIFY_ADD, [radiology])]}), conn.result
    searches = counted_searches(monkeypatch)
    assert role_of(app, "carol") == "clinician"
    assert remote in searches and received == []
    assert f"directory group '{remote}' is held by another directory server" in caplog.text


def test_taken_out_of_the_inner_group_loses_access_at_the_recheck(app, client, auth, directory):
    consultants, radiology = group("radiology-consultants"), group("radiology")
    with groups(directory, {consultants: [CAROL], radiology: [consultants]}, {CLINICIANS_GROUP: [radiology]}):
        assert auth.login("carol", DIRECTORY_PEOPLE["carol"][0]).status_code == 302
        with app.app_context():
            assert recheck_directory_accounts() == 0  # still in, two levels down
        with directory.admin() as conn:  # a groupOfNames needs a member: alice stays in it
            assert conn.modify(consultants, {"member": [(MODIFY_ADD, [ALICE]), (MODIFY_DELETE, [CAROL])]})
        with app.app_context():
            assert recheck_directory_accounts() == 1
            ended = db.session.query(AuditEvent).filter_by(action="access_ended", target="carol").all()
            assert [e.details for e in ended] == ["directory re-check: in neither group, or disabled"]
        assert client.get("/screen").status_code == 302


BOUND = "groups not all read (at most {levels} levels up and {reads} group entries read per check)"


def test_a_chain_deeper_than_the_bound_is_not_a_member_with_a_warning(app, directory, caplog):
    # The clinicians' group, then nested groups at levels 1 .. MAX_NESTING + 1 below it, carol in the deepest.
    depth = directory_module.MAX_NESTING
    chain = [group(f"level-{level}") for level in range(1, depth + 2)]
    new = {chain[-1]: [CAROL]} | {chain[i]: [chain[i + 1]] for i in reversed(range(depth))}
    with groups(directory, new, {CLINICIANS_GROUP: [chain[0]]}):
        assert role_of(app, "carol") is None
        warning = BOUND.format(levels=depth, reads=directory_module.MAX_GROUP_READS)
        assert f"directory entry '{CAROL}': its {warning}; groups past them give no role" in caplog.text
        with directory.admin() as conn:  # in the group at the deepest level read: found
            assert conn.modify(chain[depth - 1], {"member": [(MODIFY_ADD, [CAROL])]}), conn.result
        assert role_of(app, "carol") == "clinician"


def test_a_walk_past_the_bound_on_group_entries_read_is_not_a_member(app, directory, monkeypatch, caplog):
    # Read in order: consultants, radiology (which names the clinicians' group).
    consultants, radiology = group("radiology-consultants"), group("radiology")
    with groups(directory, {consultants: [CAROL], radiology: [consultants]}, {CLINICIANS_GROUP: [radiology]}):
        monkeypatch.setattr(directory_module, "MAX_GROUP_READS", 1)
        assert role_of(app, "carol") is None
        assert BOUND.format(levels=directory_module.MAX_NESTING, reads=1) in caplog.text
        monkeypatch.setattr(directory_module, "MAX_GROUP_READS", 2)
        assert role_of(app, "carol") == "clinician"


def test_a_directory_lost_during_the_walk_is_an_outage_not_a_refusal(app, auth, own_ldap_server, monkeypatch):
    app.config.update(own_ldap_server.app_settings())
    radiology = group("radiology")
    with own_ldap_server.admin() as conn:  # this test's own directory: nothing to take away afterwards
        assert conn.add(radiology, ["groupOfNames"], {"cn": "radiology", "member": [CAROL]}), conn.result
        assert conn.modify(CLINICIANS_GROUP, {"member": [(MODIFY_ADD, [radiology])]}), conn.result
    search = directory_module._search

    def stopping_at_the_nested_group(service, base, *args, **kwargs):
        if base == radiology:
            own_ldap_server.stop()
        return search(service, base, *args, **kwargs)

    monkeypatch.setattr(directory_module, "_search", stopping_at_the_nested_group)
    response = auth.login("carol", DIRECTORY_PEOPLE["carol"][0])
    assert response.status_code == 503 and UNREACHABLE in response.get_data(as_text=True)


def test_an_entry_in_over_1500_groups_uses_the_first_range_and_says_the_rest_are_past_the_bound(
    app, monkeypatch, caplog
):
    # Active Directory sends such an entry's memberOf as memberOf;range=0-1499 (tests/ranged_directory.py);
    # ldap3 with auto_range off hands it on under that name, and read as "memberOf" it was no groups at all.
    groups_dn = "OU=Groups,DC=ad,DC=test"
    person = "CN=Dana Example,OU=Staff,DC=ad,DC=test"
    names = [f"CN=Team {n},{groups_dn}" for n in range(1600)]
    names[700], names[1550] = f"CN=CXR Clinicians,{groups_dn}", f"CN=CXR Admins,{groups_dn}"  # 1550: not sent
    server = RangedDirectory(person, names)
    try:
        app.config.update(ad_settings(server, LDAP_ADMIN_GROUP_DN=names[1550], LDAP_CLINICIAN_GROUP_DN=names[700]))
        monkeypatch.setattr(directory_module, "MAX_GROUP_READS", 3)
        assert role_of(app, "dana") == "clinician"
        # The person, the admins' member list, then 3 groups read before the bound ends the walk.
        assert server.asked == ["OU=Staff,DC=ad,DC=test", names[1550], *names[:3]]
        assert f"directory entry '{person}': its groups not all read" in caplog.text
    finally:
        server.close()
