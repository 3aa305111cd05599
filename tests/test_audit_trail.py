"""The audit trail: who did what, when, from where; filters, the admin API, retention, append-only."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from tests.factories import add_prediction
from tests.helpers import PASSWORDS, csrf_token, token_form
from webapp.extensions import db
from webapp.models import AuditEvent, User, record_audit, utcnow

FIVE = {"sign_in", "sign_in_failed", "prediction_viewed", "export", "sign_out"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def events(client, token: str, query: str = "") -> dict:
    response = client.get(f"/api/v1/audit-events{query}", headers=bearer(token))
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def prediction_id(app, clinician_user) -> int:
    with app.app_context():
        return add_prediction(clinician_user)


def test_five_actions_are_listed_with_user_time_and_address(app, client, auth, admin_user, prediction_id, admin_token):
    auth.login("clin", "not-the-password")
    auth.login("admin")
    assert client.get(f"/predictions/{prediction_id}").status_code == 200
    assert client.get("/admin/history.csv").status_code == 200
    auth.logout()

    body = events(client, admin_token)
    assert set(body) >= {"events", "page", "per_page", "total", "pages"}
    listed = {e["action"]: e for e in body["events"]}
    assert set(listed) >= FIVE
    for action in FIVE:
        item = listed[action]
        assert set(item) >= {"id", "time", "user", "action", "detail", "ip"}
        assert item["user"] == ("clin" if action == "sign_in_failed" else "admin")
        assert item["ip"] == "127.0.0.1"
        assert abs(datetime.fromisoformat(item["time"]) - utcnow()) < timedelta(minutes=5)
    assert listed["prediction_viewed"]["detail"] == f"prediction {prediction_id}; detail page"
    assert listed["sign_in_failed"]["detail"]  # why it failed


def test_every_way_of_seeing_a_film_is_recorded(
    app, client, auth, clinician_user, prediction_id, api_token, admin_token
):
    auth.login("clin")
    for path in (
        f"/screen/results?id={prediction_id}",
        f"/predictions/{prediction_id}",
        f"/predictions/{prediction_id}/image.png",
        f"/predictions/{prediction_id}/heatmap.png",
    ):
        assert client.get(path).status_code == 200
    assert client.get(f"/api/v1/predictions/{prediction_id}", headers=bearer(api_token)).status_code == 200
    views = events(client, admin_token, "?action=prediction_viewed")["events"]
    assert sorted(e["detail"].split("; ")[1] for e in views) == sorted(
        ["results page", "detail page", "image", "heat map", "api"]
    )
    assert {e["user"] for e in views} == {"clin"}


def test_each_read_of_the_api_list_is_one_export_row(app, client, clinician_user, api_token, admin_token):
    """The list answers up to 200 patients' records a request: like the CSV export, every read is in the
    trail (one row per request, with its count, filters and page); a refused request read nothing."""
    with app.app_context():
        for _ in range(3):
            add_prediction(clinician_user, "PNEUMONIA")
    for query in ("?verdict=PNEUMONIA&per_page=2", "?verdict=PNEUMONIA&per_page=2&page=2", "?per_page=0"):
        client.get(f"/api/v1/predictions{query}", headers=bearer(admin_token))
    assert client.get("/api/v1/predictions", headers=bearer(api_token)).status_code == 403
    exports = events(client, admin_token, "?action=export")["events"]
    assert [(e["user"], e["detail"]) for e in exports] == [
        ("admin", "API list, 1 rows; filters: verdict=PNEUMONIA; page=2, per_page=2"),
        ("admin", "API list, 2 rows; filters: verdict=PNEUMONIA; page=1, per_page=2"),
    ]
    assert exports[0]["ip"] == "127.0.0.1"


def test_the_user_filter_compares_names_as_accounts_are(app, client, auth, admin_user, admin_token):
    """docs/api.md's own example (user=dr.lee) found none of Dr.Lee's rows: the trail matched the name
    exactly while the history's filter folds it (found by the security review on 5 December)."""
    with app.app_context():
        lee = User(username="Dr.Lee", role="clinician")
        lee.set_password(PASSWORDS["clin"])
        db.session.add(lee)
        db.session.commit()
    assert auth.login("Dr.Lee", PASSWORDS["clin"]).status_code == 302
    auth.logout()
    for spelling in ("dr.lee", "DR.LEE", "Dr.Lee", "\uff24r.Lee"):
        listed = events(client, admin_token, f"?user={spelling}")["events"]
        assert [e["action"] for e in listed] == ["sign_out", "sign_in"], spelling
    auth.login("admin")
    page = client.get("/admin/audit?user=dr.lee").get_data(as_text=True)
    assert "Page 1 of 1 (2 events)" in page
    assert events(client, admin_token, "?user=dr.le")["total"] == 0  # still whole names only


def test_filters_and_pages(app, client, auth, admin_token, clinician_user):
    auth.login("clin")
    auth.logout()
    auth.login("clin", "wrong-password-here")
    assert [e["action"] for e in events(client, admin_token, "?action=sign_out")["events"]] == ["sign_out"]
    assert {e["user"] for e in events(client, admin_token, "?user=clin")["events"]} == {"clin"}
    first = events(client, admin_token, "?user=clin&per_page=2")
    assert (first["total"], first["pages"], len(first["events"])) == (3, 2, 2)
    second = events(client, admin_token, "?user=clin&per_page=2&page=2")
    assert len(second["events"]) == 1 and second["events"][0]["id"] < first["events"][-1]["id"]  # newest first
    today = utcnow().date()
    assert events(client, admin_token, f"?date_from={today}&date_to={today}")["total"] >= 3
    assert events(client, admin_token, f"?date_to={today - timedelta(days=1)}")["total"] == 0
    # The last representable day is a valid filter (no date arithmetic overflows on it).
    assert events(client, admin_token, "?date_to=9999-12-31")["total"] >= 3
    for bad in ("?date_from=soon", "?date_from=2026-02-30", "?page=99999999999999999999", "?per_page=0"):
        response = client.get(f"/api/v1/audit-events{bad}", headers=bearer(admin_token))
        assert response.status_code == 400 and response.json["error"]["message"], bad


def test_the_trail_is_in_the_order_recorded_whatever_the_clocks(app, client, auth, admin_user, admin_token):
    """Found comparing which clocks stamp the trail: each gunicorn worker, the job worker and each
    replica stamps its own rows. clin signs in on a replica whose clock runs 2 s ahead, and opens a film
    through one whose clock is right, a second later: the trail, sorted by those stamps, listed the film
    opened before the sign-in, and an auditor read events of one session in an order that never was.
    The order is the one the rows were written in (their ids); the times shown stay each stamp."""
    with app.app_context():
        now = utcnow()
        db.session.add(AuditEvent(actor="clin", action="sign_in", created_at=now + timedelta(seconds=2)))
        db.session.commit()
        db.session.add(AuditEvent(actor="clin", action="prediction_viewed", created_at=now + timedelta(seconds=1)))
        db.session.commit()
    listed = [e["action"] for e in events(client, admin_token, "?user=clin")["events"]]
    assert listed == ["prediction_viewed", "sign_in"]  # newest first
    auth.login("admin")
    page = client.get("/admin/audit?user=clin").get_data(as_text=True)
    assert page.index("<td>prediction_viewed</td>") < page.index("<td>sign_in</td>")


def test_only_admins_read_it(client, api_token, auth, clinician_user):
    response = client.get("/api/v1/audit-events", headers=bearer(api_token))
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    auth.login("clin")
    assert client.get("/admin/audit").status_code == 403


def test_admin_page_filters_and_paginates(app, client, auth, admin_user):
    with app.app_context():
        for i in range(60):
            record_audit("robot", "prediction_viewed", f"prediction {i}")
        db.session.commit()
    auth.login("admin")
    html = client.get("/admin/audit?action=prediction_viewed&user=robot").get_data(as_text=True)
    assert "Page 1 of 2 (60 events)" in html and "action=prediction_viewed" in html and "user=robot" in html
    assert "sign_in" not in html.split("<tbody>")[1]
    older = client.get("/admin/audit?action=prediction_viewed&user=robot&page=2").get_data(as_text=True)
    assert "Page 2 of 2" in older
    assert client.get("/admin/audit?date_to=9999-12-31").status_code == 200
    assert client.get("/admin/audit?date_to=someday").status_code == 400
    assert client.get("/admin/audit?page=99999999999999999999").status_code == 400


def test_who_opened_one_film_is_one_filter_on_the_page_and_the_api(app, client, auth, admin_user, admin_token):
    # An auditor asked "who opened film 3?" had to read the whole trail: there was no filter on the target.
    with app.app_context():
        for name, target in (("dr.a", "prediction 3"), ("dr.b", "prediction 37"), ("dr.c", "prediction 3")):
            record_audit(name, "prediction_viewed", target, "detail page")
        db.session.commit()
    found = events(client, admin_token, "?target=prediction%203")
    assert [e["user"] for e in found["events"]] == ["dr.c", "dr.a"]  # whole targets: not "prediction 37"
    auth.login("admin")
    rows = client.get("/admin/audit?target=prediction+3").get_data(as_text=True).split("<tbody>")[1]
    assert "dr.a" in rows and "dr.c" in rows and "dr.b" not in rows
    assert client.get("/api/v1/audit-events?target=x%0Ay", headers=bearer(admin_token)).status_code == 400
    assert client.get("/admin/audit?target=" + "x" * 256).status_code == 400


@pytest.mark.parametrize(
    "recorded_ip",
    [
        pytest.param("203.0.113.9", marks=pytest.mark.app_config(TRUSTED_PROXIES=1), id="behind_a_trusted_proxy"),
        pytest.param("127.0.0.1", id="forwarded_header_ignored_without_trusted_proxies"),
    ],
)
def test_address_of_a_sign_in(app, client, admin_token, recorded_ip):
    token = csrf_token(client, "/auth/login")
    client.post(
        "/auth/login",
        data={"username": "admin", "password": "wrong-password", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    (failed,) = events(client, admin_token, "?action=sign_in_failed")["events"]
    assert failed["ip"] == recorded_ip


def test_prune_deletes_only_past_retention_and_is_itself_audited(app, runner):
    with app.app_context():
        old, recent = utcnow() - timedelta(days=2556), utcnow() - timedelta(days=2554)
        db.session.add_all(
            [
                AuditEvent(actor="a", action="sign_in", created_at=old),
                AuditEvent(actor="b", action="sign_in", created_at=recent),
            ]
        )
        db.session.commit()
    result = runner.invoke(args=["audit", "prune"])
    assert result.exit_code == 0 and "Deleted 1 audit event(s) older than 2555 days" in result.output
    with app.app_context():
        left = {(e.actor, e.action) for e in db.session.scalars(db.select(AuditEvent))}
    assert left == {("b", "sign_in"), ("cli:operator", "audit_pruned")}
    assert "Deleted 1" in runner.invoke(args=["audit", "prune", "--days", "1"]).output


def test_prune_refuses_a_retention_past_what_a_date_can_hold(app, runner):
    # `audit prune --days 100000000` ended in an OverflowError traceback.
    result = runner.invoke(args=["audit", "prune", "--days", "100000000"])
    assert result.exit_code == 2 and "100000000 is not in the range 1<=x<=36500" in result.output
    assert "Deleted 0" in runner.invoke(args=["audit", "prune", "--days", "36500"]).output


def test_the_database_refuses_to_change_an_event(app):
    with app.app_context():
        record_audit("admin", "sign_in")
        db.session.commit()
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(update(AuditEvent).values(actor="someone-else"))
            db.session.flush()
        db.session.rollback()
        assert db.session.scalar(db.select(AuditEvent.actor)) == "admin"


def test_no_password_or_token_ever_reaches_it(app, client, runner, auth, admin_user, clinician_user):
    secrets = ["created-pass-123", "reset-pass-4567", "admin-reset-pass-89", "typed-as-username-00"]
    runner.invoke(args=["users", "create", "newbie", "--password", secrets[0]])
    secrets.append(runner.invoke(args=["users", "token", "newbie", "--name", "n"]).output.strip().splitlines()[-1])
    runner.invoke(args=["users", "reset-password", "newbie", "--password", secrets[1]])
    auth.login("admin")
    page = client.post(f"/admin/users/{clinician_user}/tokens", data={**token_form(client), "name": "t"}).get_data(
        as_text=True
    )
    secrets.append(page.split('<code class="token">')[1].split("<")[0])
    client.post(
        f"/admin/users/{clinician_user}/password",
        data={"csrf_token": csrf_token(client, "/admin/users"), "password": secrets[2]},
    )
    auth.logout()
    auth.login(secrets[3], PASSWORDS["admin"])  # a password typed into the user name field
    auth.login("admin", secrets[3])
    with app.app_context():
        rows = db.session.scalars(db.select(AuditEvent)).all()
        text = " ".join(f"{e.actor} {e.action} {e.target} {e.details} {e.ip}" for e in rows)
    assert {"token_issued", "token_revoked", "sign_in_failed"} <= {e.action for e in rows}
    for secret in secrets + list(PASSWORDS.values()):
        assert secret not in text


def test_every_action_the_app_writes_is_documented():
    """An auditor filters `GET /api/v1/audit-events?action=` by the names the docs give: every action
    written with a literal name is named in docs/ (security.md lists them, or points to the page that does)."""
    root = Path(__file__).resolve().parent.parent
    docs = "".join(path.read_text() for path in (root / "docs").glob("*.md"))
    # record_audit(actor, "action", ...), and the PACS result actions, named by their callers.
    writers = {"record_audit", "_act_on_failed_result"}
    actions = {
        node.args[1].value
        for path in (root / "webapp").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in writers and len(node.args) > 1
        if isinstance(node.args[1], ast.Constant)
    }
    assert len(actions) > 15
    assert {action for action in actions if f"`{action}`" not in docs} == set()
