"""Sign-in resists guessing without letting anyone lock others out, and does not reveal which names exist."""

import threading
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from tests.helpers import PASSWORDS, csrf_token, make_user, reset_database, threadable_app
from webapp import create_app
from webapp.auth import throttle
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import AuditEvent, User, utcnow

ATTACKER = "192.0.2.66"  # TEST-NET-1: a documentation address, only ever a string in the WSGI environ


def post_login(client, username: str, password: str, address: str = "127.0.0.1", headers=None):
    return client.post(
        "/auth/login",
        data={"username": username, "password": password, "csrf_token": csrf_token(client, "/auth/login")},
        environ_base={"REMOTE_ADDR": address},
        headers=headers or {},
    )


@pytest.fixture
def verifications(monkeypatch):
    """Every Argon2 verification the app runs, with the parameters of the hash it checked against."""
    seen = []
    real = PasswordHasher.verify

    def spy(self, hash_, password):
        seen.append(hash_.split("$")[3])  # m=...,t=...,p=...
        return real(self, hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return seen


@pytest.mark.parametrize(
    "username,password",
    [("clin", "wrong-password-1"), ("clin", PASSWORDS["clin"]), ("no-such-user", "wrong-password-1")],
)
def test_known_and_unknown_names_cost_one_argon2_check_each(client, clinician_user, verifications, username, password):
    # Equal work is what makes the times equal; the measured times are in docs/sign-in.md
    # (scripts/measure_sign_in.py), not asserted here.
    post_login(client, username, password)
    assert len(verifications) == 1


def test_unknown_name_check_uses_the_same_hasher_settings(client, clinician_user, verifications):
    post_login(client, "clin", "wrong-password-1")
    post_login(client, "nobody-at-all", "wrong-password-1")
    assert verifications[0] == verifications[1]


def test_deactivated_user_costs_the_same_check(app, client, clinician_user, verifications):
    with app.app_context():
        db.session.get(User, clinician_user).active = False
        db.session.commit()
    assert post_login(client, "clin", PASSWORDS["clin"]).status_code == 401
    assert len(verifications) == 1


def test_progressive_delays_after_the_allowance(app, client, clinician_user, monkeypatch):
    # The throttle's clock stands still: each wait is then exact, whatever the password checks took.
    start = utcnow()
    monkeypatch.setattr(throttle, "utcnow", lambda: start)
    for _ in range(5):
        assert post_login(client, "clin", "wrong-password-1").status_code == 401
    response = post_login(client, "clin", PASSWORDS["clin"])  # even the right password waits now
    assert response.status_code == 429 and response.headers["Retry-After"] == "15"
    assert "wait 15 seconds" in response.get_data(as_text=True)
    monkeypatch.setattr(throttle, "utcnow", lambda: start + timedelta(seconds=16))
    assert post_login(client, "clin", "wrong-password-1").status_code == 401  # one more try allowed ...
    response = post_login(client, "clin", PASSWORDS["clin"])
    assert response.status_code == 429 and response.headers["Retry-After"] == "30"  # ... then twice the wait
    monkeypatch.setattr(throttle, "utcnow", lambda: start + timedelta(seconds=47))
    assert post_login(client, "clin", PASSWORDS["clin"]).status_code == 302  # and the owner gets in


def test_the_wait_given_is_never_shorter_than_the_wait(app, client, clinician_user, monkeypatch):
    # 14.4 s still to wait was answered "Retry-After: 14" (rounded to the nearest second): a client that
    # came back after 14 s was refused again.
    start = utcnow()
    monkeypatch.setattr(throttle, "utcnow", lambda: start)
    for _ in range(5):
        post_login(client, "clin", "wrong-password-1")
    monkeypatch.setattr(throttle, "utcnow", lambda: start + timedelta(seconds=0.6))
    response = post_login(client, "clin", PASSWORDS["clin"])
    assert response.status_code == 429 and response.headers["Retry-After"] == "15"


def test_a_counter_under_its_allowance_never_delays_whatever_its_time(app, client, clinician_user, monkeypatch):
    # A double-click's first post counted its try with a clock reading taken after the second's: the
    # second then saw a failure "from the future" and was told "wait 1 seconds" (CI, 5 December). A
    # worker or replica whose clock runs ahead does the same. Under the allowance no counter delays.
    start = utcnow()
    monkeypatch.setattr(throttle, "utcnow", lambda: start + timedelta(seconds=2))
    assert post_login(client, "clin", "wrong-password-1").status_code == 401
    monkeypatch.setattr(throttle, "utcnow", lambda: start)
    assert post_login(client, "clin", PASSWORDS["clin"]).status_code == 302


def test_a_name_typed_at_sign_in_is_kept_nowhere_in_clear(app, client, clinician_user):
    # A password typed into the username field: the audit trail keeps "(unknown)", but the throttle's
    # counter row kept the text itself, with the address, until that same text signed in successfully.
    typed = "Tr0ub4dor&3-Secret"
    for _ in range(6):  # past the allowance: the counter is still what delays the guesser
        assert post_login(client, typed, "wrong-password-1").status_code in (401, 429)
    assert post_login(client, typed, "wrong-password-1").status_code == 429
    with app.app_context():
        kept = [
            str(value)
            for table in db.metadata.sorted_tables
            for row in db.session.execute(table.select())
            for value in row
        ]
    assert not [value for value in kept if typed.lower() in value.lower()]


def test_delays_are_capped(app, clinician_user):
    with app.test_request_context():
        app.config["LOGIN_MAX_DELAY_SECONDS"] = 300
        assert [throttle.delay_seconds(f, 5) for f in (4, 5, 6, 7, 9, 40)] == [0, 15, 30, 60, 240, 300]


def test_guessing_from_elsewhere_does_not_lock_out_the_admin(client, admin_user):
    for _ in range(8):
        assert post_login(client, "admin", "guessed-password", address=ATTACKER).status_code in (401, 429)
    assert post_login(client, "admin", "guessed-password", address=ATTACKER).status_code == 429
    assert post_login(client, "admin", PASSWORDS["admin"]).status_code == 302


def test_forwarded_for_is_ignored_without_trusted_proxies(client, clinician_user):
    # Without TRUSTED_PROXIES, a client cannot dodge the per-address limit by inventing X-Forwarded-For.
    for i in range(5):
        response = post_login(client, "clin", "wrong-password-1", headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert response.status_code == 401
    response = post_login(client, "clin", "wrong-password-1", headers={"X-Forwarded-For": "198.51.100.99"})
    assert response.status_code == 429


def test_forwarded_for_is_used_behind_a_trusted_proxy(tmp_path):
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "TRUSTED_PROXIES": 1})
    with app.app_context():
        reset_database()
    make_user(app, "clin", "clinician")
    client = app.test_client()
    for _ in range(5):
        post_login(client, "clin", "wrong-password-1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert post_login(client, "clin", PASSWORDS["clin"], headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    # Another person behind the same proxy is another address.
    assert post_login(client, "clin", PASSWORDS["clin"], headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 302


def test_parallel_attempts_get_no_more_than_the_allowance_of_checks(tmp_path, verifications):
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    make_user(app, "clin", "clinician")
    verifications.clear()
    start = threading.Barrier(40)
    statuses = []

    def attempt():
        client = app.test_client()
        start.wait()
        response = client.post("/auth/login", data={"username": "clin", "password": "wrong-password-1"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(statuses) == 40
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) == len(verifications) <= app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    assert len(verifications) >= 1
    print(f"40 parallel attempts: {len(verifications)} password checks, {statuses.count(429)} delayed")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_many_sign_ins_at_one_workstation_are_not_failures(app, client, auth, clinician_user):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 3
    for _ in range(6):
        assert auth.login().status_code == 302
        auth.logout()
    assert post_login(client, "someone-else", "wrong-password-1").status_code == 401


@pytest.mark.app_config(SIGN_IN_RATE_LIMIT="5/minute")
def test_a_flood_of_sign_in_posts_is_cut_off_before_the_audit_trail(app, client, clinician_user):
    """Each refused sign-in is an audit row; past SIGN_IN_RATE_LIMIT an address gets a 429 that
    writes none, so a flood cannot fill the permanent trail."""
    statuses = [post_login(client, "clin", "wrong-password-1").status_code for _ in range(12)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="sign_in_failed").count() == 5
    assert client.get("/auth/login").status_code == 200  # the page itself stays reachable
