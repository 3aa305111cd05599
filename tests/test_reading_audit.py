"""Reading the audit trail and a validation report is itself in the audit trail.

Found by the hospital auditor: opening the administrators' history was recorded (`history_viewed`),
but reading the audit trail (which names who opened which patient's film) and a validation run's
report (which lists films by their archive names, often patients' names) left no trace.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from tests.test_validation_delete import bearer, finished_run, start_run
from webapp.extensions import db
from webapp.models import AuditEvent, record_audit


def recorded(app, action: str) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
        return [(e.actor, e.target, e.details) for e in rows]


def test_each_page_of_the_trail_read_is_recorded_once(app, client, auth, admin_user, admin_token):
    auth.login("admin")
    assert client.get("/admin/audit?action=sign_in").status_code == 200
    assert client.get("/admin/audit?action=sign_in&page=2").status_code == 200
    assert client.get("/admin/audit?date_from=2026-13-01").status_code == 400  # applied: no filter
    assert client.get("/api/v1/audit-events?user=cli&per_page=5", headers=bearer(admin_token)).status_code == 200
    assert recorded(app, "audit_viewed") == [
        ("admin", "1 rows", "filters: action=sign_in; page=1"),
        ("admin", "1 rows", "filters: action=sign_in; page=1"),  # past the last page: the last one
        ("admin", "3 rows", "filters: none; page=1"),  # the sign-in and the two reads before
        ("admin", "0 rows", "filters: user=cli; page=1"),
    ]


def test_a_finished_report_read_is_recorded_on_the_page_and_the_api(app, client, auth, admin_token):
    run_id = finished_run(app, client, admin_token)
    auth.login("admin")
    assert client.get(f"/admin/validation/{run_id}").status_code == 200
    assert client.get(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token)).status_code == 200
    target = f"validation run {run_id}"
    assert recorded(app, "validation_report_viewed") == [("admin", target, "report page"), ("admin", target, "api")]


def test_a_run_still_working_is_not_recorded_at_each_refresh_or_poll(app, client, auth, admin_token):
    run_id = start_run(client, admin_token)  # queued: no job runs in this test
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}")
    assert page.status_code == 200 and 'http-equiv="refresh"' in page.get_data(as_text=True)
    assert client.get(f"/admin/validation/{run_id}?auto_refresh=1").status_code == 200
    assert client.get(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token)).json["status"] == "queued"
    assert recorded(app, "validation_report_viewed") == []


def test_the_trails_pages_do_not_slide_as_each_read_is_recorded(app, client, auth, admin_user):
    """Found paging the Audit page on the live server: each page read is recorded at the top of the
    trail, so "Older" (page 2) began with the row that had ended page 1, and each later page repeated
    one more. The page links now hold the pages to the trail as it stood at the first page's read."""
    auth.login("admin")
    with app.app_context():
        for i in range(60):
            record_audit("someone", "test_event", f"row {i}")
        db.session.commit()

    def rows(path):
        html = client.get(path).get_data(as_text=True)
        body = html.split("<tbody>")[1].split("</tbody>")[0]
        older = re.search(r'<a href="([^"]+)">Older</a>', html)
        return re.findall(r"<tr>(.*?)</tr>", body, re.S), older and older.group(1).replace("&amp;", "&")

    first, older = rows("/admin/audit")
    assert older and "upto=" in older
    second, _ = rows(older)
    assert not set(first) & set(second), "a row of page 1 listed again on page 2"
    assert len(first) == 50 and len(first) + len(second) == 61  # the sign-in and 60 events, not the reads
    again, _ = rows(older)  # read again (reloaded): the same rows, though two reads were recorded since
    assert again == second
    assert "Show the newest events" in client.get(older).get_data(as_text=True)
