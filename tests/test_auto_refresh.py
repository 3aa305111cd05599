"""Pages that reload themselves (the worklist every 30 s, a running validation run every 3 s) can be
stopped: each reload sends a screen reader back to the top and takes the keyboard focus away, and a
meta refresh with no way to stop it fails WCAG 2.2.1 (failure F41)."""

from __future__ import annotations

import html
import re

from webapp.extensions import db
from webapp.models import ValidationRun

META = re.compile(r'http-equiv="refresh"')
SWITCH = re.compile(r'<p class="refresh-switch">.*?<a href="([^"]+)">([^<]+)</a>', re.S)


def switch(page: str) -> tuple[str, str]:
    found = SWITCH.search(page)
    assert found, "no way to stop the page's refresh"
    return html.unescape(found.group(1)), found.group(2)


def check_stop_and_restart(client, path: str) -> None:
    page = client.get(path).get_data(as_text=True)
    assert META.search(page)
    stop, words = switch(page)
    assert words == "Stop refreshing"
    stopped = client.get(stop).get_data(as_text=True)
    assert not META.search(stopped), "the page still reloads itself"
    restart, words = switch(stopped)
    assert words.startswith("Refresh every") and "refresh=off" not in restart
    assert META.search(client.get(restart).get_data(as_text=True))


def test_the_worklist_refresh_can_be_stopped(client, auth, clinician_user):
    auth.login()
    check_stop_and_restart(client, "/worklist")


def test_a_running_validation_runs_refresh_can_be_stopped(app, client, auth, admin_user):
    with app.app_context():
        run = ValidationRun(created_by_id=admin_user, archive_name="a.zip", archive_sha256="0" * 64, status="running")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    auth.login("admin")
    check_stop_and_restart(client, f"/admin/validation/{run_id}")
