"""Deleting a validation run on its report page, from the shell and over the API.

Found by the data protection review: a run kept each archive member's name as it was in the
archive (`NORMAL/Mueller_Hans_1950_0.dcm`, often a patient's name), its review copies and its
figures for ever, and no run could be deleted. An administrator now deletes an ended run with
everything kept for it; a run still working, or one a site threshold was adopted from, is refused.
"""

from __future__ import annotations

import io
import os
import re
import threading

import pytest
from sqlalchemy import func, insert, select

from tests.archives import labelled_films, zip_bytes
from tests.helpers import csrf_token, drain
from webapp.extensions import db
from webapp.models import AuditEvent, SiteCalibration, User, ValidationItem, ValidationRun
from webapp.validation import deletion
from webapp.validation.storage import archive_path

NAMED = "site/NORMAL/Mueller_Hans_1950_0.jpeg"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def start_run(client, token, members=None) -> int:
    data = zip_bytes(members or labelled_films())
    archive = {"archive": (io.BytesIO(data), "s.zip")}
    response = client.post("/api/v1/validation-runs", headers=bearer(token), data=archive)
    assert response.status_code == 202
    return response.get_json()["id"]


def finished_run(app, client, token) -> int:
    members = labelled_films()
    members[NAMED] = next(data for name, data in members.items() if "/NORMAL/" in name)
    run_id = start_run(client, token, members)
    drain(app)
    with app.app_context():
        assert db.session.get(ValidationRun, run_id).status == "done"
        # One left behind by a process that died as the run ended: deleting the run removes it too.
        archive_path(run_id).write_bytes(b"PK patients' films")
    return run_id


def kept(app, run_id: int) -> tuple[bool, int, bool]:
    """Whether the run's row is there, how many of its films' rows, whether its archive file is."""
    with app.app_context():
        run = db.session.get(ValidationRun, run_id) is not None
        items = db.session.scalar(select(func.count()).where(ValidationItem.run_id == run_id))
        return run, items, archive_path(run_id).exists()


def deletions(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "validation.delete"))
        return [(e.actor, e.target, e.details) for e in events]


def adopt_directly(app, run_id: int) -> None:
    """A site threshold from the run (the real adoption needs 50 films a class: too slow here)."""
    with app.app_context():
        admin = User.by_username("admin")
        db.session.add(
            SiteCalibration(
                validation_run_id=run_id, model_version="m", threshold=0.5, reason="test", adopted_by_id=admin.id
            )
        )
        db.session.commit()


def test_an_admin_deletes_an_ended_run_on_its_report_page(app, client, auth, admin_user, admin_token):
    run_id = finished_run(app, client, admin_token)
    other = finished_run(app, client, admin_token)
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "Mueller_Hans_1950_0.jpeg" in page  # the names stay for the review, until the run is deleted
    assert 'id="delete-run"' in page and "Delete this run" in page and 'name="confirm"' in page
    with app.app_context():
        item_id = db.session.scalar(select(ValidationItem.id).where(ValidationItem.run_id == run_id))
    token = csrf_token(client, f"/admin/validation/{run_id}")

    unconfirmed = client.post(f"/admin/validation/{run_id}/delete", data={"csrf_token": token})
    assert unconfirmed.status_code == 303
    assert "Tick the box to confirm" in client.get(unconfirmed.headers["Location"]).get_data(as_text=True)
    assert client.post(f"/admin/validation/{run_id}/delete", data={"confirm": "y"}).status_code == 400  # no CSRF
    assert kept(app, run_id) == (True, 5, True) and deletions(app) == []

    response = client.post(f"/admin/validation/{run_id}/delete", data={"csrf_token": token, "confirm": "y"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/validation/")
    index = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Validation run {run_id} was deleted with its 5 films" in index
    assert kept(app, run_id) == (False, 0, False)
    assert deletions(app) == [("admin", f"validation run {run_id}", "5 films")]
    for path in ("/films.csv", f"/films/{item_id}/image.png", f"/films/{item_id}/heatmap.png"):
        assert client.get(f"/admin/validation/{run_id}{path}").status_code == 404
    report = client.get(f"/admin/validation/{run_id}")  # a stale link to the report: the page says so
    assert report.status_code == 303 and report.headers["Location"].endswith("/admin/validation/")
    assert f"Validation run {run_id} was deleted (by you), with its report." in client.get("/admin/validation/").text
    assert client.get("/admin/validation/999999").status_code == 404  # no run was ever there
    assert kept(app, other) == (True, 5, True)  # only that run
    # The form sent again (the back button, a double-click): not a missing page, the run is gone.
    gone = client.post(f"/admin/validation/{run_id}/delete", data={"csrf_token": token, "confirm": "y"})
    assert gone.status_code == 303 and gone.headers["Location"].endswith("/admin/validation/")
    said = client.get(gone.headers["Location"]).get_data(as_text=True)
    assert f"Validation run {run_id} was already deleted (by you); nothing was done." in said
    assert deletions(app) == [("admin", f"validation run {run_id}", "5 films")]


def test_a_form_of_a_run_deleted_meanwhile_says_so(app, client, auth, runner, admin_user, admin_token):
    # Found by the admin pages' review: another administrator deleted the run while this one had its
    # report open; Cancel, Redact or Adopt then answered the bare 404 page.
    run_id = finished_run(app, client, admin_token)
    auth.login("admin")
    token = csrf_token(client, f"/admin/validation/{run_id}")
    assert runner.invoke(args=["validation", "delete", str(run_id), "--yes"]).exit_code == 0
    forms = {
        "cancel": {},
        "redact": {"confirm_redaction": "y"},
        "adopt": {"threshold": "0.4", "reason": "site review"},
        "delete": {"confirm": "y"},
    }
    for action, data in forms.items():
        answer = client.post(f"/admin/validation/{run_id}/{action}", data={"csrf_token": token, **data})
        assert answer.status_code == 303 and answer.headers["Location"].endswith("/admin/validation/"), action
        said = client.get(answer.headers["Location"]).get_data(as_text=True)
        assert f"Validation run {run_id} was already deleted (by cli:operator); nothing was done." in said, action
    # The link to its report, on the validation page drawn before the delete.
    report = client.get(f"/admin/validation/{run_id}")
    assert report.status_code == 303 and report.headers["Location"].endswith("/admin/validation/")
    said = client.get(report.headers["Location"]).get_data(as_text=True)
    assert f"Validation run {run_id} was deleted (by cli:operator), with its report." in said
    never = client.post("/admin/validation/999999/delete", data={"csrf_token": token, "confirm": "y"})
    said = client.get(never.headers["Location"]).get_data(as_text=True)
    assert "There is no validation run 999999 (any longer); nothing was done." in said


def test_the_api_deletes_an_ended_run(app, client, admin_token):
    run_id = finished_run(app, client, admin_token)
    response = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    assert response.status_code == 204 and response.data == b""
    assert kept(app, run_id) == (False, 0, False)
    assert deletions(app) == [("admin", f"validation run {run_id}", "5 films")]
    # Ids outside 1..2^31-1 too: with a rule per method, DELETE /validation-runs/0 answered 405
    # "use GET" (found by Schemathesis), as Werkzeug had matched the path with the GET rule first.
    for run in (run_id, 0, 2147483647, 2147483648, 10**30):
        for method in ("DELETE", "GET"):
            answer = client.open(f"/api/v1/validation-runs/{run}", method=method, headers=bearer(admin_token))
            assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found", (method, run)
    put = client.put(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    assert put.status_code == 405 and set(put.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "DELETE"}


def test_the_shell_command_names_the_run_and_asks_first(app, client, runner, admin_token):
    run_id = finished_run(app, client, admin_token)
    declined = runner.invoke(args=["validation", "delete", str(run_id)], input="n\n")
    assert declined.exit_code == 1 and "s.zip, done" in declined.output and "Nothing was deleted." in declined.output
    assert re.search(r"uploaded \d{4}-\d\d-\d\d UTC\)", declined.output), declined.output  # says its zone
    assert kept(app, run_id) == (True, 5, True)
    result = runner.invoke(args=["validation", "delete", str(run_id)], input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Deleted validation run {run_id} with its 5 films." in result.output
    assert kept(app, run_id) == (False, 0, False)
    assert deletions(app) == [("cli:operator", f"validation run {run_id}", "5 films")]
    unknown = runner.invoke(args=["validation", "delete", str(run_id), "--yes"])
    assert unknown.exit_code == 1 and f"No validation run {run_id}." in unknown.output
    assert "Traceback" not in unknown.output


def test_non_admins_cannot_delete_a_run(app, client, auth, clinician_user, api_token, admin_token):
    run_id = finished_run(app, client, admin_token)
    auth.login("clin")
    token = csrf_token(client, "/screen")
    page = client.post(f"/admin/validation/{run_id}/delete", data={"csrf_token": token, "confirm": "y"})
    assert page.status_code == 403
    response = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(api_token))
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert client.delete(f"/api/v1/validation-runs/{run_id}").status_code == 401
    assert kept(app, run_id) == (True, 5, True) and deletions(app) == []


def test_a_run_still_working_is_deleted_only_once_cancelled(app, client, auth, runner, admin_user, admin_token):
    # Deleting under a job that is writing the run's films would race it; cancelling stops the job first.
    run_id = start_run(client, admin_token)
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "is still queued: cancel it first, then delete it." in page and 'name="confirm"' not in page
    token = csrf_token(client, f"/admin/validation/{run_id}")
    response = client.post(f"/admin/validation/{run_id}/delete", data={"csrf_token": token, "confirm": "y"})
    assert "is still queued: cancel it first" in client.get(response.headers["Location"]).get_data(as_text=True)
    answer = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    assert answer.status_code == 409 and answer.get_json()["error"] == {
        "code": "run_working",
        "message": f"Validation run {run_id} is still queued: cancel it first, then delete it.",
    }
    shell = runner.invoke(args=["validation", "delete", str(run_id), "--yes"])
    assert shell.exit_code == 1 and "cancel it first" in shell.output
    assert kept(app, run_id) == (True, 4, True) and deletions(app) == []

    client.post(f"/admin/validation/{run_id}/cancel", data={"csrf_token": token})
    assert client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token)).status_code == 204
    drain(app)  # the job still queued for it finds no run and writes nothing
    assert kept(app, run_id) == (False, 0, False)
    assert deletions(app) == [("admin", f"validation run {run_id}", "4 films")]


def test_a_run_a_site_threshold_was_adopted_from_is_kept(app, client, auth, admin_user, admin_token):
    run_id = finished_run(app, client, admin_token)
    adopt_directly(app, run_id)
    answer = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "run_adopted"
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "kept as the evidence for that threshold" in page and 'name="confirm"' not in page
    assert kept(app, run_id) == (True, 5, True) and deletions(app) == []


def test_a_threshold_adopted_while_the_run_is_deleted_keeps_it_whole(app, client, admin_token, monkeypatch):
    # The check that the page and the API make first has passed; a threshold is adopted before the delete.
    run_id = finished_run(app, client, admin_token)
    checked = []

    def adopted_after_the_check(run):
        checked.append(run.id)
        if len(checked) == 1:
            adopt_directly(app, run_id)
            return None
        return real(run)

    real = deletion.deletion_problem
    monkeypatch.setattr(deletion, "deletion_problem", adopted_after_the_check)
    answer = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "run_adopted"
    assert kept(app, run_id) == (True, 5, True) and deletions(app) == []


def test_a_failure_while_deleting_leaves_the_run_whole(app, client, admin_token, monkeypatch):
    run_id = finished_run(app, client, admin_token)

    def audit_down(*args, **kwargs):
        raise RuntimeError("the audit trail cannot be written")

    monkeypatch.setattr(deletion, "record_audit", audit_down)
    with app.app_context(), pytest.raises(RuntimeError):
        deletion.delete_run(run_id, "admin")
    assert kept(app, run_id) == (True, 5, True)


@pytest.mark.skipif("postgresql" not in os.environ.get("TEST_DATABASE_URL", ""), reason="PostgreSQL's foreign key")
def test_a_threshold_adopted_in_a_concurrent_transaction_keeps_the_run_whole(app, client, admin_token):
    # Another administrator adopts a threshold from the run, not yet committed when the delete checks:
    # the delete waits for that transaction, then PostgreSQL's foreign key refuses it; nothing goes.
    run_id = finished_run(app, client, admin_token)
    with app.app_context():
        admin_id = User.by_username("admin").id
        other = db.engine.connect()
    other.begin()
    other.execute(
        insert(SiteCalibration).values(
            validation_run_id=run_id, model_version="m", threshold=0.5, reason="test", adopted_by_id=admin_id
        )
    )
    commit_later = threading.Timer(1.0, other.commit)
    commit_later.start()
    try:
        answer = client.delete(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token))
    finally:
        commit_later.join()
        other.close()
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "run_adopted"
    assert kept(app, run_id) == (True, 5, True) and deletions(app) == []
