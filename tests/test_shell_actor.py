"""Shell commands in the audit trail: `cli:NAME`, the person's system account, not a bare `cli`."""

from __future__ import annotations

import getpass
import os

import pytest

from webapp.extensions import db
from webapp.models import AuditEvent
from webapp.shell_actor import shell_actor


def _actors(app, action: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(db.select(AuditEvent.actor).where(AuditEvent.action == action)))


def test_a_shell_command_is_audited_with_the_account_that_ran_it(app, runner, monkeypatch):
    monkeypatch.setenv("LOGNAME", "alice")
    created = runner.invoke(args=["users", "create", "bob", "--password", "Long-enough-passw0rd!"])
    assert created.exit_code == 0, created.output
    assert _actors(app, "user_created") == ["cli:alice"]
    # `sudo -u app flask ...`: the service account ran it, on behalf of whoever called sudo.
    monkeypatch.setenv("SUDO_USER", "carol")
    issued = runner.invoke(args=["users", "token", "bob"])
    assert issued.exit_code == 0, issued.output
    assert _actors(app, "token_issued") == ["cli:carol"]
    pruned = runner.invoke(args=["audit", "prune"])
    assert pruned.exit_code == 0, pruned.output
    assert _actors(app, "audit_pruned") == ["cli:carol"]


def test_a_name_is_kept_to_the_column_and_to_one_line(monkeypatch):
    monkeypatch.setenv("SUDO_USER", "eve\nINFO forged\x1b[0m")
    assert shell_actor() == "cli:eve?INFO?forged??0m"
    monkeypatch.setenv("SUDO_USER", "x" * 100)
    assert shell_actor() == "cli:" + "x" * 60


def test_an_account_without_a_name_is_named_by_its_uid(monkeypatch):
    def nameless():
        raise KeyError("getpwuid(): uid not found")  # a container started with --user 12345

    monkeypatch.setattr(getpass, "getuser", nameless)
    assert shell_actor() == f"cli:uid={os.getuid()}"


@pytest.fixture
def trail(app):
    with app.app_context():
        for actor in ("cli", "cli:alice", "cli:bob", "client", "alice"):
            db.session.add(AuditEvent(actor=actor, action="user_created", target=actor))
        db.session.commit()


@pytest.mark.usefixtures("trail")
def test_the_filter_cli_still_finds_every_shell_command(app, client, auth, admin_user, admin_token):
    def api(user: str) -> set[str]:
        answer = client.get(
            f"/api/v1/audit-events?action=user_created&user={user}", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert answer.status_code == 200, answer.json
        return {event["user"] for event in answer.json["events"]}

    # `cli` meant "done at the shell" before names were recorded, and still does; a name is matched whole.
    assert api("cli") == {"cli", "cli:alice", "cli:bob"}
    assert api("cli:alice") == {"cli:alice"}
    assert api("alice") == {"alice"}
    auth.login("admin")
    page = client.get("/admin/audit?action=user_created&user=cli").get_data(as_text=True)
    listed = {actor for actor in ("cli", "cli:alice", "cli:bob", "client", "alice") if f"<td>{actor}</td>" in page}
    assert listed == {"cli", "cli:alice", "cli:bob"}
