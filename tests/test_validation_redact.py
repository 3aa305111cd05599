"""Removing a validation run's film names and pictures while keeping its figures.

Found by the data protection review: a run a site threshold was adopted from can never be deleted (it
is that threshold's evidence), so its films' names (`NORMAL/Mueller_Hans_1950_0.dcm`, often a
patient's name) and review copies (burned-in text) were kept for good. Redacting keeps the evidence
and ends what is personal.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.archives import labelled_films
from tests.helpers import csrf_token, drain
from tests.test_validation_delete import NAMED, adopt_directly, bearer, start_run
from webapp.extensions import db
from webapp.models import AuditEvent, ValidationItem, ValidationRun
from webapp.validation import redaction

UNREADABLE = "site/PNEUMONIA/Schmidt_Eva_1961.jpeg"


def adopted_run(app, client, token) -> int:
    """A finished run with a duplicate named after a patient and an unreadable film, adopted from."""
    members = labelled_films()
    members[NAMED] = next(data for name, data in members.items() if "/NORMAL/" in name)
    members[UNREADABLE] = b"\xff\xd8 not really a JPEG"
    run_id = start_run(client, token, members)
    drain(app)
    adopt_directly(app, run_id)
    return run_id


def snapshot(app, run_id: int) -> tuple[list[tuple], dict, list[str]]:
    """The run's films (id, name, truth, answer, score, has pictures), its figures, and every name in them."""
    with app.app_context():
        run = db.session.get(ValidationRun, run_id)
        films = db.session.execute(
            select(
                ValidationItem.id,
                ValidationItem.entry,
                ValidationItem.truth,
                ValidationItem.label,
                ValidationItem.p_pneumonia,
                ValidationItem.review_png.is_not(None),
            )
            .where(ValidationItem.run_id == run_id)
            .order_by(ValidationItem.id)
        ).all()
        metrics = dict(run.metrics)
    names = [f["entry"] for f in metrics["refused_files"]]
    names += [n for d in metrics["duplicates"] for n in (d["entry"], d["same_as"])]
    return [tuple(f) for f in films], metrics, names


def redactions(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "validation.redact"))
        return [(e.actor, e.target, e.details) for e in events]


def test_an_admin_redacts_an_adopted_run_on_its_report_page(app, client, auth, admin_user, admin_token):
    run_id = adopted_run(app, client, admin_token)
    before, metrics_before, names_before = snapshot(app, run_id)
    assert NAMED in names_before and UNREADABLE in names_before
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "Mueller_Hans_1950_0.jpeg" in page and "Schmidt_Eva_1961.jpeg" in page
    assert 'id="redact-run"' in page and 'name="confirm_redaction"' in page
    token = csrf_token(client, f"/admin/validation/{run_id}")

    unconfirmed = client.post(f"/admin/validation/{run_id}/redact", data={"csrf_token": token})
    refusal = client.get(unconfirmed.headers["Location"]).get_data(as_text=True)
    assert "Tick the box to confirm the redaction." in refusal
    assert client.post(f"/admin/validation/{run_id}/redact", data={"confirm_redaction": "y"}).status_code == 400
    assert snapshot(app, run_id)[0] == before and redactions(app) == []

    response = client.post(f"/admin/validation/{run_id}/redact", data={"csrf_token": token, "confirm_redaction": "y"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/admin/validation/{run_id}")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "heat maps of 6 films were removed; the figures stay." in page
    assert "Mueller" not in page and "Schmidt" not in page and "site/" not in page

    after, metrics_after, names_after = snapshot(app, run_id)
    # Every film keeps its truth, answer and score; its name is "film <id>" and its pictures are gone.
    assert [f[:1] + f[2:5] for f in after] == [f[:1] + f[2:5] for f in before]
    assert [f[1] for f in after] == [f"film {f[0]}" for f in before]
    assert not any(f[5] for f in after)
    assert set(names_after) <= {f"film {f[0]}" for f in before}
    unnamed = {k: v for k, v in metrics_after.items() if k not in ("refused_files", "duplicates")}
    assert unnamed == {k: v for k, v in metrics_before.items() if k not in ("refused_files", "duplicates")}
    assert redactions(app) == [("admin", f"validation run {run_id}", "6 films")]
    csv_text = client.get(f"/admin/validation/{run_id}/films.csv").get_data(as_text=True)
    assert "Mueller" not in csv_text and f"film {before[0][0]}," in csv_text
    assert client.get(f"/admin/validation/{run_id}/films/{before[0][0]}/image.png").status_code == 404

    again = client.post(f"/admin/validation/{run_id}/redact", data={"csrf_token": token, "confirm_redaction": "y"})
    assert "had no names or pictures left to remove" in client.get(again.headers["Location"]).get_data(as_text=True)
    assert len(redactions(app)) == 1  # nothing changed, nothing audited


def test_the_api_redacts_and_a_second_call_changes_nothing(app, client, admin_token, api_token):
    run_id = adopted_run(app, client, admin_token)
    url = f"/api/v1/validation-runs/{run_id}/redaction"
    refused = client.post(url, headers=bearer(api_token))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert client.post(url).status_code == 401
    first = client.post(url, headers=bearer(admin_token))
    assert first.status_code == 200 and first.get_json() == {"run_id": run_id, "films_redacted": 6}
    assert client.post(url, headers=bearer(admin_token)).get_json() == {"run_id": run_id, "films_redacted": 0}
    assert redactions(app) == [("admin", f"validation run {run_id}", "6 films")]
    body = client.get(f"/api/v1/validation-runs/{run_id}", headers=bearer(admin_token)).get_data(as_text=True)
    assert "Mueller" not in body and "Schmidt" not in body
    for missing in (run_id + 1, 0, 2147483648):
        answer = client.post(f"/api/v1/validation-runs/{missing}/redaction", headers=bearer(admin_token))
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found", missing


def test_a_run_still_working_is_not_redacted(app, client, runner, admin_token):
    run_id = start_run(client, admin_token)
    before = snapshot_names(app, run_id)
    answer = client.post(f"/api/v1/validation-runs/{run_id}/redaction", headers=bearer(admin_token))
    assert answer.status_code == 409 and answer.get_json()["error"] == {
        "code": "run_working",
        "message": f"Validation run {run_id} is still queued: cancel it or wait for it to end, then redact it.",
    }
    shell = runner.invoke(args=["validation", "redact", str(run_id), "--yes"])
    assert shell.exit_code == 1 and "wait for it to end" in shell.output
    assert snapshot_names(app, run_id) == before and redactions(app) == []


def snapshot_names(app, run_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(ValidationItem.entry).where(ValidationItem.run_id == run_id)))


def test_the_shell_command_names_the_run_and_asks_first(app, client, runner, admin_token):
    run_id = adopted_run(app, client, admin_token)
    declined = runner.invoke(args=["validation", "redact", str(run_id)], input="n\n")
    assert declined.exit_code == 1 and "s.zip, done" in declined.output and "Nothing was changed." in declined.output
    assert NAMED in snapshot_names(app, run_id)
    result = runner.invoke(args=["validation", "redact", str(run_id)], input="y\n")
    assert result.exit_code == 0, result.output
    assert f"heat maps of 6 films of validation run {run_id}." in result.output
    assert not any(name.startswith("site/") for name in snapshot_names(app, run_id))
    assert redactions(app) == [("cli:operator", f"validation run {run_id}", "6 films")]
    again = runner.invoke(args=["validation", "redact", str(run_id), "--yes"])
    assert again.exit_code == 0 and "no names or pictures left to remove" in again.output
    unknown = runner.invoke(args=["validation", "redact", "999", "--yes"])
    assert unknown.exit_code == 1 and "No validation run 999." in unknown.output


def test_a_film_name_quoted_in_a_failed_runs_error_is_replaced(app, client, admin_token):
    run_id = adopted_run(app, client, admin_token)
    with app.app_context():
        run = db.session.get(ValidationRun, run_id)
        run.status, run.error = "failed", f"Unexpected error: KeyError: '{NAMED}'"
        item_id = db.session.scalar(select(ValidationItem.id).where(ValidationItem.entry == NAMED))
        db.session.commit()
    assert client.post(f"/api/v1/validation-runs/{run_id}/redaction", headers=bearer(admin_token)).status_code == 200
    with app.app_context():
        assert db.session.get(ValidationRun, run_id).error == f"Unexpected error: KeyError: 'film {item_id}'"


def test_a_failure_while_redacting_leaves_the_run_as_it_was(app, client, admin_token, monkeypatch):
    run_id = adopted_run(app, client, admin_token)
    before = snapshot(app, run_id)

    def audit_down(*args, **kwargs):
        raise RuntimeError("the audit trail cannot be written")

    monkeypatch.setattr(redaction, "record_audit", audit_down)
    with app.app_context(), pytest.raises(RuntimeError):
        redaction.redact_run(run_id, "admin")
    assert snapshot(app, run_id) == before
