"""Nested groups (docs/sign-in.md, "Nested groups") against the real OpenLDAP of tests/ldap_server.py,
and Active Directory's ranged member lists against tests/ranged_directory.py.

Until 5 December only direct membership counted: a person in "Radiology Consultants", itself a member
of the clinicians' group, as hospital IT grants access in Active Directory, was refused. Groups added
here over LDAP give their members memberOf (the memberof overlay, as Active Directory does), so the
walk starts where memberOf and the group's member list have both said "not directly".
"""

from contextlib import contextmanager

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from tests.helpers import AuthActions
from tests.ldap_server import ADMINS_GROUP, CLINICIANS_GROUP, DIRECTORY_PEOPLE, PEOPLE, SUFFIX
from tests.ranged_directory import RangedDirectory
from webapp.auth import directory as directory_module
from webapp.auth.recheck import recheck_directory_accounts
from webapp.extensions import db
from webapp.models import AuditEvent, User

CAROL = f"uid=carol,{PEOPLE}"  # in neither group directly
ALICE = f"uid=alice,{PEOPLE}"  # directly in the clinicians' group (its member list only, no memberOf)
GONE = f"uid=left-in-2019,{PEOPLE}"  # no such entry: a member deleted without its groups being told
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
        # One BASE search per entry read, walking down from each group once the direct checks failed:
        # the admins' group and bob in it, then the clinicians' group, alice, radiology, consultants.
        walked = [ADMINS_GROUP, f"uid=bob,{PEOPLE}", CLINICIANS_GROUP, ALICE, radiology, consultants]
        assert searches == [PEOPLE, ADMINS_GROUP, *walked[:2], CLINICIANS_GROUP, *walked[2:]]
        # A direct member costs what it did before nested groups: bob's memberOf names the admins' group.
        searches.clear()
        assert AuthActions(app.test_client()).login("bob", DIRECTORY_PEOPLE["bob"][0]).status_code == 302
        assert searches == [PEOPLE]


def test_admin_through_a_nested_group_beats_a_direct_clinician(app, client, auth, directory):
    on_call = group("on-call-admins")
    with groups(directory, {on_call: [ALICE]}, {ADMINS_GROUP: [on_call]}):
        assert auth.login("alice", DIRECTORY_PEOPLE["alice"][0]).status_code == 302
        assert client.get("/admin/users").status_code == 200
        with app.app_context():
            assert User.by_username("alice").role == "admin"
    assert role_of(app, "alice") == "clinician"  # the nested admins' group gone: the direct group again


def test_a_cycle_of_groups_ends_and_answers(app, directory, caplog):
    a, b, inner = group("cycle-a"), group("cycle-b"), group("behind-the-cycle")
    with groups(directory, {a: [ALICE], b: [a], inner: [ALICE]}, {a: [b], CLINICIANS_GROUP: [a]}):
        assert role_of(app, "carol") is None  # A in B, B in A: the walk ends, carol in neither
        assert "not all read" not in caplog.text  # everything was read: no bound involved
        with directory.admin() as conn:
            assert conn.modify(b, {"member": [(MODIFY_ADD, [inner])]}), conn.result
            assert conn.modify(inner, {"member": [(MODIFY_ADD, [CAROL])]}), conn.result
        assert role_of(app, "carol") == "clinician"  # found past the cycle


def test_a_member_that_no_longer_exists_is_skipped(app, client, auth, directory):
    # Read as a refused search, the deleted member made every walk through the group an outage (503).
    radiology = group("radiology")
    with groups(directory, {radiology: [GONE, CAROL]}, {CLINICIANS_GROUP: [GONE, radiology]}):
        response = auth.login("carol", DIRECTORY_PEOPLE["carol"][0])
        assert response.status_code == 302, response.get_data(as_text=True)
        assert role_of(app, "carol") == "clinician"


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


def test_a_chain_deeper_than_the_bound_is_not_a_member_with_a_warning(app, directory, caplog):
    # The clinicians' group, then nested groups at levels 1 .. MAX_NESTING + 1, carol in the deepest.
    depth = directory_module.MAX_NESTING
    chain = [group(f"level-{level}") for level in range(1, depth + 2)]
    new = {chain[-1]: [CAROL]} | {chain[i]: [chain[i + 1]] for i in reversed(range(depth))}
    with groups(directory, new, {CLINICIANS_GROUP: [chain[0]]}):
        assert role_of(app, "carol") is None
        warning = f"directory group '{CLINICIANS_GROUP}': nested groups not all read (at most {depth} levels"
        assert warning in caplog.text and "counted as not a member" in caplog.text
        with directory.admin() as conn:  # in the group at the deepest level read: found
            assert conn.modify(chain[depth - 1], {"member": [(MODIFY_ADD, [CAROL])]}), conn.result
        assert role_of(app, "carol") == "clinician"


def test_a_walk_past_the_bound_on_entries_read_is_not_a_member(app, directory, monkeypatch, caplog):
    # Read in order: the clinicians' group, alice, radiology (which names carol).
    radiology = group("radiology")
    with groups(directory, {radiology: [CAROL]}, {CLINICIANS_GROUP: [radiology]}):
        monkeypatch.setattr(directory_module, "MAX_NESTED_READS", 2)
        assert role_of(app, "carol") is None
        assert "2 entries read per check); 'uid=carol," in caplog.text
        monkeypatch.setattr(directory_module, "MAX_NESTED_READS", 3)
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


def test_a_member_held_by_another_server_is_skipped_and_no_password_follows_the_referral(app, own_ldap_server, caplog):
    # A group's member under a referral entry (another domain of an Active Directory forest, or any host
    # someone who may create referrals names): ldap3 followed the referral and bound there with the
    # service account's DN and password, in clear text on ldap://. It is skipped, and nothing goes there.
    elsewhere = RangedDirectory(["cn=nobody"])
    try:
        app.config.update(own_ldap_server.app_settings())
        branch, radiology = f"ou=elsewhere,{SUFFIX}", group("radiology")
        with own_ldap_server.admin() as conn:  # this test's own directory: nothing to take away afterwards
            referral = {"ou": "elsewhere", "ref": f"{elsewhere.url}/{branch}"}
            assert conn.add(branch, ["referral", "extensibleObject"], referral), conn.result
            assert conn.add(radiology, ["groupOfNames"], {"cn": "radiology", "member": [CAROL]}), conn.result
            change = [(MODIFY_ADD, [f"cn=someone,{branch}", radiology])]
            assert conn.modify(CLINICIANS_GROUP, {"member": change}), conn.result
        assert role_of(app, "carol") == "clinician"
        assert elsewhere.binds == [] and elsewhere.asked == []
        assert f"directory group member 'cn=someone,{branch}' is held by another directory server" in caplog.text
    finally:
        elsewhere.close()


BIG_GROUP = "CN=All Staff,OU=Groups,DC=ad,DC=test"


@pytest.fixture
def large_group(app):
    """A directory answering as Active Directory does about a group of 3,600 members (tests/ranged_directory.py)."""

    def serve(refuse_from: int | None = None) -> RangedDirectory:
        server = RangedDirectory([f"CN=Person {n},OU=Staff,DC=ad,DC=test" for n in range(3600)], refuse_from)
        servers.append(server)
        app.config.update(LDAP_URL=server.url, LDAP_BIND_DN="CN=svc-cxr,DC=ad,DC=test", LDAP_BIND_PASSWORD="x")
        return server

    servers: list[RangedDirectory] = []
    yield serve
    for server in servers:
        server.close()


def members_read(app) -> list[str]:
    """The group's members as the walk reads them, over the app's own connection (_connection's settings)."""
    with app.app_context(), directory_module._service_account() as (_, service):
        return directory_module._members(service, BIG_GROUP, member=False)


def test_every_range_of_a_large_active_directory_group_is_read(app, large_group):
    # ldap3's auto_range, on by default, reads the ranges too; off alone, ldap3 failed with KeyError
    # 'member' (a 500) at the second range, deleting an empty "member" it had added itself.
    server = large_group()
    assert members_read(app) == server.members
    assert server.asked == [["member"], ["member;range=1500-*"], ["member;range=3000-*"]]


def test_a_range_refused_is_an_outage_not_a_shorter_list(app, large_group):
    # With ldap3's auto_range the refused second range ended the reading quietly: 1,500 members and a
    # success, so someone among the other 2,100 was "not a member" and lost access at the re-check.
    large_group(refuse_from=1500)
    with pytest.raises(directory_module.DirectoryUnavailable, match="busy"):
        members_read(app)
