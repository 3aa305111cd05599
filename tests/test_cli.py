import pytest

from tests.helpers import PASSWORDS, held_after_answering, in_parallel, make_user, threadable_app
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


@pytest.mark.parametrize("name", ["CLIN", "Clin", "a b", "x", "al\u0131ce", "dr/x", "PACS", "pacs"])
def test_create_refuses_case_variants_and_names_outside_the_pattern(app, runner, clinician_user, name):
    result = runner.invoke(args=["users", "create", name, "--password", "a-long-password"])
    assert result.exit_code != 0
    with app.app_context():
        assert db.session.query(User).count() == 1


@pytest.mark.parametrize(
    "command", [["users", "create", "PACS", "--password", "a-long-password"], ["users", "rename", "clin", "pacs"]]
)
def test_the_reserved_name_is_refused_as_reserved_not_as_existing(app, client, auth, admin_user, runner, command):
    """Found following docs/sign-in.md ("PACS is refused too: it is the user every film from the PACS
    shows"): the shell and the Users page said "User 'PACS' already exists", and `users list` showed no
    such user. They now say the name is reserved and why."""
    from tests.helpers import csrf_token

    make_user(app, "clin", "clinician")
    result = runner.invoke(args=command)
    assert result.exit_code == 1 and "is reserved: it is the user every film from the PACS shows" in result.output
    assert "already exists" not in result.output
    auth.login("admin")
    form = {"csrf_token": csrf_token(client, "/admin/users"), "username": "Pacs", "role": "clinician"}
    page = client.post("/admin/users", data={**form, "password": "a-long-password"}).get_data(as_text=True)
    assert "The name &#39;Pacs&#39; is reserved: it is the user every film from the PACS shows." in page


def test_token_is_printed_on_last_line(app, client, runner, clinician_user):
    result = runner.invoke(args=["users", "token", "clin"])
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        assert ApiToken.authenticate(token).user.username == "clin"
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


def test_an_account_already_deactivated_is_not_deactivated_again(app, runner, clinician_user):
    """The shell deactivated (and activated) again an account already so: its access was ended and a
    `user_deactivated` row written each time, and one beside the Users page's at the same moment did
    the same (the page's change is conditional since 5 December; the shell now shares it)."""
    assert runner.invoke(args=["users", "deactivate", "clin"]).output.strip() == "Deactivated clin."
    again = runner.invoke(args=["users", "deactivate", "clin"])
    assert again.exit_code == 0 and again.output.strip() == "clin was already deactivated."
    assert runner.invoke(args=["users", "activate", "clin"]).output.strip() == "Activated clin."
    assert runner.invoke(args=["users", "activate", "clin"]).output.strip() == "clin was already active."
    with app.app_context():
        actions = db.session.scalars(db.select(AuditEvent.action).where(AuditEvent.target == "clin")).all()
    assert sorted(a for a in actions if a.startswith("user_")) == ["user_activated", "user_deactivated"]


def test_the_only_active_administrator_is_not_deactivated(app, runner, admin_user):
    # The Users page refuses an administrator's own account; the shell deactivated the last one.
    result = runner.invoke(args=["users", "deactivate", "admin"])
    assert result.exit_code == 1 and "admin is the only active administrator" in result.output
    runner.invoke(args=["users", "create", "second", "--role", "admin", "--password", "a-long-enough-password"])
    assert runner.invoke(args=["users", "deactivate", "admin"]).exit_code == 0
    with app.app_context():
        assert not User.by_username("admin").active


def test_admin_pages_manage_users_and_are_audited(app, client, auth, admin_user, clinician_user):
    from tests.helpers import csrf_token

    auth.login("admin")
    token = csrf_token(client, "/admin/users")
    response = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "new.doc", "role": "clinician", "password": "a-long-password"},
    )
    assert response.status_code == 303
    client.post(f"/admin/users/{clinician_user}/active", data={"csrf_token": token, "active": "0"})
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
    client.post(
        f"/admin/users/{admin_user}/active", data={"csrf_token": csrf_token(client, "/admin/users"), "active": "0"}
    )
    with app.app_context():
        assert User.by_username("admin").active


def test_create_user_sent_again_says_the_account_was_made(app, client, auth, admin_user, clinician_user):
    """Found double-clicking Create user on the live server: the second POST, after the first had made
    the account, answered "That username is taken", and that is the answer the browser shows; so did
    the form re-sent from the back button. The same form again (name, role and password) from the same
    administrator within minutes now says the account was made, once; anything else is still taken."""
    from tests.helpers import csrf_token

    auth.login("admin")
    form = {"csrf_token": csrf_token(client, "/admin/users"), "username": "new.doc", "role": "clinician"}
    form["password"] = "a-long-password"
    assert client.post("/admin/users", data=form).status_code == 303
    again = client.post("/admin/users", data=form, follow_redirects=True)
    html = again.get_data(as_text=True)
    assert again.status_code == 200 and "User new.doc created (the form arrived twice" in html
    assert "That username is taken" not in html
    for other in ({"password": "another-long-password"}, {"role": "admin"}, {"username": "New.Doc"}):
        refused = client.post("/admin/users", data=form | other)
        assert refused.status_code == 400 and "That username is taken" in refused.get_data(as_text=True), other
    with app.app_context():
        assert db.session.query(User).filter(db.func.lower(User.username) == "new.doc").count() == 1
        assert db.session.query(AuditEvent).filter_by(action="user_created", target="new.doc").count() == 1


def test_reset_password_sent_again_does_not_say_no_token_was_revoked(app, client, auth, admin_user, api_token):
    """Found double-clicking Reset password on the live server: the first POST revoked the user's API
    token, the second set the same password again and answered "0 API token(s) revoked", the answer
    the browser shows. The same password found in place, set moments ago by this administrator and not
    yet replaced, now answers that it was already reset and changes nothing."""
    from tests.helpers import csrf_token

    auth.login("admin")
    with app.app_context():
        clin = User.by_username("clin").id
    data = {"csrf_token": csrf_token(client, "/admin/users"), "password": "a fresh long phrase 9"}
    first = client.post(f"/admin/users/{clin}/password", data=data, follow_redirects=True).get_data(as_text=True)
    assert "1 API token(s) revoked" in first
    again = client.post(f"/admin/users/{clin}/password", data=data, follow_redirects=True).get_data(as_text=True)
    assert "0 API token(s) revoked" not in again and "was already reset to this one moments ago" in again
    other = client.post(f"/admin/users/{clin}/password", data=data | {"password": "another long phrase 8"})
    assert "reset; they choose their own" in client.get(other.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="password_reset").count() == 2


def test_one_account_created_twice_at_once_is_made_once_not_a_500(tmp_path, monkeypatch):
    """The Users page's Create user sent twice at once (a double-click) passed the "name taken" check
    twice; the second insert broke the unique name and its administrator got a 500. Both requests are
    held after that check until both have made it. One account is made; the second answer, the one
    the browser shows, says so too (it said "That username is taken": the admin read that it was not
    made; test_create_user_sent_again_says_the_account_was_made)."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "admin", "admin")
    held_after_answering(monkeypatch, User, "name_taken")

    def create():
        client = app.test_client()
        client.post("/auth/login", data={"username": "admin", "password": PASSWORDS["admin"]})
        form = {"username": "new.doc", "role": "clinician", "password": "a-long-password"}
        response = client.post("/admin/users", data=form)
        return response.status_code, "That username is taken" in response.get_data(as_text=True)

    assert sorted(in_parallel(create, create)) == [(303, False), (303, False)]
    with app.app_context():
        assert db.session.query(User).filter_by(username="new.doc").count() == 1
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("postgresql+psycopg://cxr:pw-s3cret@127.0.0.1:{port}/cxr", "Connection refused"),
        ("sqlite:///{tmp}/no-such-folder/cxr.sqlite", "unable to open database file"),
        ("sqlite:///{tmp}/cxr.sqlite", "no such table: "),
    ],
)
@pytest.mark.parametrize("command", [["users", "list"], ["users", "deactivate", "clin"], ["audit", "prune"]])
def test_a_database_that_cannot_be_used_is_one_line(tmp_path, database, reason, command):
    # These ended in a 150-line SQLAlchemy traceback (PostgreSQL down, no instance folder, no migrations yet).
    import socket

    from webapp import create_app
    from webapp.config import TestingConfig

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = database.format(port=port, tmp=tmp_path)
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": url})
    result = app.test_cli_runner().invoke(args=command)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the database (DATABASE_URL) failed: ") and reason in result.output
    assert len(result.output.strip().splitlines()) == 1 and "pw-s3cret" not in result.output
    assert "no such table" not in reason or "Run `flask --app wsgi db upgrade` first." in result.output


@pytest.mark.parametrize("command", [["db", "upgrade"], ["users", "list"]])
def test_an_instance_folder_not_made_yet_is_named(tmp_path, command):
    """Found following the docs with INSTANCE_DIR set to a new folder: `flask --app wsgi db upgrade` said
    only "the database (DATABASE_URL) failed: unable to open database file", naming a setting the site
    never set (scripts/run.sh makes the folder; the command alone does not)."""
    from webapp import create_app
    from webapp.config import TestingConfig

    folder = tmp_path / "instance"
    app = create_app(
        TestingConfig, {"INSTANCE_DIR": folder, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/cxr.sqlite"}
    )
    result = app.test_cli_runner().invoke(args=command)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert f"The folder {folder} does not exist: create it (INSTANCE_DIR" in result.output


def test_a_schema_behind_the_code_says_to_migrate(app, runner, clinician_user):
    """A backup restored from before an upgrade: SQLite's "no such column" gave no hint (only a
    missing table did), so the administrator was left with the driver's words."""
    from flask_migrate import downgrade

    with app.app_context():
        downgrade(revision="0003_audit")  # before 0007 added users.directory_access
    result = runner.invoke(args=["users", "list"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.rstrip().endswith("Run `flask --app wsgi db upgrade` first.")


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("postgresql+psycopg://cxr:pw-s3cret@127.0.0.1:{port}/cxr", "Connection refused"),
        ("sqlite:///{tmp}/no-such-folder/cxr.sqlite", "unable to open database file"),
    ],
)
def test_db_upgrade_on_a_database_that_cannot_be_reached_is_one_line(tmp_path, database, reason):
    """`flask db upgrade` (Flask-Migrate's command, run by the container's entrypoint) printed a
    150-line traceback; it now fails like the other shell commands, on one line, exit status 1."""
    import socket

    from webapp import create_app
    from webapp.config import TestingConfig

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = database.format(port=port, tmp=tmp_path)
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": url})
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the database (DATABASE_URL) failed: ")
    assert reason in result.output and len(result.output.strip().splitlines()) == 1
    assert "pw-s3cret" not in result.output and "db upgrade` first" not in result.output


def test_names_differing_only_in_case_created_at_once_make_one_account(tmp_path, monkeypatch):
    """ "Alice" and "alice" created at the same moment (two administrators, a page and the shell): both
    passed the case-insensitive "name taken" check before either was saved, and the unique name,
    case-sensitive, let both in: two accounts for one person. Both are held after that check."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "admin", "admin")
    held_after_answering(monkeypatch, User, "name_taken")

    def create(name):
        def post():
            client = app.test_client()
            client.post("/auth/login", data={"username": "admin", "password": PASSWORDS["admin"]})
            form = {"username": name, "role": "clinician", "password": "a-long-password"}
            response = client.post("/admin/users", data=form)
            return response.status_code, "That username is taken" in response.get_data(as_text=True)

        return post

    assert sorted(in_parallel(create("Alice"), create("alice"))) == [(303, False), (400, True)]
    with app.app_context():
        assert db.session.query(User).filter(db.func.lower(User.username) == "alice").count() == 1
        db.session.remove()
        db.engine.dispose()


def test_the_shell_told_a_name_was_taken_at_the_last_moment_says_so(app, runner, monkeypatch):
    """`users create Alice` while "alice" is saved on the Users page between its check and its own
    save (as test_names_differing_only_in_case_created_at_once_make_one_account holds two requests):
    the database refuses it, and the shell says the name is taken, not a traceback."""
    make_user(app, "clin", "clinician")
    monkeypatch.setattr(User, "name_taken", staticmethod(lambda name: False))  # the check came first
    result = runner.invoke(args=["users", "create", "Clin", "--password", "a-long-password"])
    assert result.exit_code == 1 and "already exists (names differing only in case" in result.output
    with app.app_context():
        assert [u.username for u in db.session.query(User)] == ["clin"]
