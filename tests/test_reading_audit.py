"""Reading the audit trail and a validation report is itself in the audit trail.

Found by the hospital auditor: opening the administrators' history was recorded (`history_viewed`),
but reading the audit trail (which names who opened which patient's film) and a validation run's
report (which lists films by their archive names, often patients' names) left no trace.
"""

from __future__ import annotations

from sqlalchemy import select

from tests.test_validation_delete import bearer, finished_run, start_run
from webapp.extensions import db
from webapp.models import AuditEvent


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
