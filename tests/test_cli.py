import pytest

from webapp.extensions import db
from webapp.models import ApiToken, AuditEvent, User


def test_create_user_with_password(app, runner):
    result = runner.invoke(args=["users", "create", "dr-a", "--role", "admin", "--password", "a-long-password"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = User.by_username("dr-a")
        assert user.role == "admin" and user.check_password("a-long-password")
        assert db.session.query(AuditEvent).filter_by(action="user_created", target="dr-a").count() == 1


def test_create_user_prompts_for_password(app, runner):
    result = runner.invoke(args=["users", "create", "dr-b"], input="a-long-password\na-long-password\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert User.by_username("dr-b").role == "clinician"


def test_create_refuses_duplicates_and_short_passwords(runner, clinician_user):
    assert runner.invoke(args=["users", "create", "clin", "--password", "a-long-password"]).exit_code != 0
    assert "12 characters" in runner.invoke(args=["users", "create", "dr-x", "--password", "short"]).output


@pytest.mark.parametrize("name", ["CLIN", "Clin", "a b", "x", "al\u0131ce", "dr/x"])
def test_create_refuses_case_variants_and_names_outside_the_pattern(app, runner, clinician_user, name):
    result = runner.invoke(args=["users", "create", name, "--password", "a-long-password"])
    assert result.exit_code != 0
    with app.app_context():
        assert db.session.query(User).count() == 1


def test_token_is_printed_on_last_line(app, client, runner, clinician_user):
    result = runner.invoke(args=["users", "token", "clin"])
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        assert ApiToken.user_for(token).username == "clin"
    response = client.get("/api/v1/predictions/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404


def test_deactivate_activate_and_reset(app, runner, clinician_user):
    assert runner.invoke(args=["users", "deactivate", "clin"]).exit_code == 0
    with app.app_context():
        assert not User.by_username("clin").active
    runner.invoke(args=["users", "activate", "clin"])
    result = runner.invoke(args=["users", "reset-password", "clin", "--password", "brand-new-password"])
    assert result.exit_code == 0
    with app.app_context():
        user = User.by_username("clin")
        assert user.active and user.check_password("brand-new-password")
    assert "No user named" in runner.invoke(args=["users", "deactivate", "nobody"]).output


def test_admin_pages_manage_users_and_are_audited(app, client, auth, admin_user, clinician_user):
    from tests.helpers import csrf_token

    auth.login("admin")
    token = csrf_token(client, "/admin/users")
    response = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "new.doc", "role": "clinician", "password": "a-long-password"},
    )
    assert response.status_code == 303
    client.post(f"/admin/users/{clinician_user}/active", data={"csrf_token": token})
    client.post(f"/admin/users/{clinician_user}/password", data={"csrf_token": token, "password": "another-long-one"})
    with app.app_context():
        actions = {e.action for e in db.session.query(AuditEvent).filter_by(actor="admin")}
        assert {"user_created", "user_deactivated", "password_reset"} <= actions
        assert not User.by_username("clin").active and User.by_username("clin").check_password("another-long-one")
    html = client.get("/admin/audit").get_data(as_text=True)
    assert "user_deactivated" in html and "new.doc" in html


def test_admin_cannot_deactivate_self(app, client, auth, admin_user):
    from tests.helpers import csrf_token

    auth.login("admin")
    client.post(f"/admin/users/{admin_user}/active", data={"csrf_token": csrf_token(client, "/admin/users")})
    with app.app_context():
        assert User.by_username("admin").active
