"""Sign-ins, failures, sign-outs and account changes land in the audit trail, never a password."""

from tests.helpers import (
    PASSWORDS,
    AuthActions,
    csrf_token,
    held_after_answering,
    in_parallel,
    make_user,
    threadable_app,
)
from webapp.admin.forms import SetActiveForm
from webapp.extensions import db
from webapp.models import AuditEvent, User


def events(app) -> list[AuditEvent]:
    with app.app_context():
        return db.session.query(AuditEvent).order_by(AuditEvent.id).all()


def test_identity_events_are_audited_without_passwords(app, client, auth, admin_user, clinician_user):
    typed = ["wrong-password-x1", "whatever-pass-x2", "my-own-new-passphrase", "admin-set-password-x3"]
    auth.login("clin", typed[0])
    auth.login("ghost", typed[1])
    auth.login()
    client.post(
        "/auth/password",
        data={
            "csrf_token": csrf_token(client, "/auth/password"),
            "current_password": PASSWORDS["clin"],
            "new_password": typed[2],
            "confirm": typed[2],
        },
    )
    auth.logout()
    admin = app.test_client()
    AuthActions(admin).login("admin")
    token = csrf_token(admin, "/admin/users")
    new_user = {"csrf_token": token, "username": "new.doc", "role": "clinician", "password": typed[3]}
    admin.post("/admin/users", data=new_user)
    admin.post(f"/admin/users/{clinician_user}/password", data={"csrf_token": token, "password": typed[3]})
    admin.post(f"/admin/users/{clinician_user}/active", data={"csrf_token": token, "active": "0"})

    trail = [(e.actor, e.action, e.target) for e in events(app)]
    for expected in [
        ("clin", "sign_in_failed", ""),
        ("(unknown)", "sign_in_failed", ""),  # a name no account has is not kept: it may be a password
        ("clin", "sign_in", ""),
        ("clin", "password_changed", "clin"),
        ("clin", "sign_out", ""),
        ("admin", "sign_in", ""),
        ("admin", "user_created", "new.doc"),
        ("admin", "password_reset", "clin"),
        ("admin", "user_deactivated", "clin"),
    ]:
        assert expected in trail, (expected, trail)
    written = " ".join(f"{e.actor} {e.action} {e.target} {e.details}" for e in events(app))
    for secret in [*typed, *PASSWORDS.values()]:
        assert secret not in written


def test_the_users_page_refuses_a_case_variant_of_an_existing_name(app, client, auth, admin_user, clinician_user):
    auth.login("admin")
    token = csrf_token(client, "/admin/users")
    for name, why in (("Clin", "taken"), ("CLIN", "taken"), ("Admin", "taken"), ("PACS", "reserved")):
        data = {"csrf_token": token, "username": name, "role": "admin", "password": "a-long-password-9"}
        response = client.post("/admin/users", data=data)
        assert response.status_code == 400 and why in response.get_data(as_text=True), name
    with app.app_context():
        assert sorted(u.username for u in db.session.query(User)) == ["admin", "clin"]


def test_a_wrong_current_password_on_the_password_page_is_audited(app, client, auth, clinician_user):
    """Found by pen-testing: eight guesses at the current password on the Password page (the last
    ones delayed by the throttle) left no row at all, while one at sign-in leaves `sign_in_failed`."""
    auth.login()
    guesses = [f"guess-number-{i}-x" for i in range(7)]
    for guess in guesses:
        response = client.post(
            "/auth/password",
            data={
                "csrf_token": csrf_token(client, "/auth/password"),
                "current_password": guess,
                "new_password": "a-brand-new-passphrase",
                "confirm": "a-brand-new-passphrase",
            },
        )
        assert response.status_code == 400
    failures = [(e.actor, e.target, e.details) for e in events(app) if e.action == "password_change_failed"]
    assert failures[:5] == [("clin", "clin", "wrong current password")] * 5
    assert failures[5:] == [("clin", "clin", "delayed after repeated failures")] * 2
    written = " ".join(f"{e.actor} {e.action} {e.target} {e.details}" for e in events(app))
    assert not any(guess in written for guess in guesses)


def test_one_account_deactivated_twice_at_once_is_deactivated_once(tmp_path, monkeypatch):
    """Deactivate double-clicked, or two administrators at once: each request found the account active,
    so each deactivated it, wrote `user_deactivated` and said "now deactivated". Both are held after
    the form is read."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "admin", "admin")
    clin = make_user(app, "clin", "clinician")
    admins = []
    for _ in range(2):
        admins.append(app.test_client())
        admins[-1].post("/auth/login", data={"username": "admin", "password": PASSWORDS["admin"]})
    held_after_answering(monkeypatch, SetActiveForm, "validate_on_submit")

    def deactivate(client):
        def post():
            client.post(f"/admin/users/{clin}/active", data={"active": "0"})
            return "already deactivated" in client.get("/admin/users").get_data(as_text=True)

        return post

    assert sorted(in_parallel(*(deactivate(c) for c in admins))) == [False, True]
    with app.app_context():
        assert not db.session.get(User, clin).active
        assert db.session.query(AuditEvent).filter_by(action="user_deactivated").count() == 1
        db.session.remove()
        db.engine.dispose()
