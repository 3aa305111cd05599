"""Rate limits per token and per user (Flask-Limiter): 429 with Retry-After and the JSON error body."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import redis
from limits.storage import storage_from_string

from tests.helpers import csrf_token, fixture_image, issue_token, make_user, reset_database
from tests.redis_server import RedisServer
from webapp import create_app, limit_storage
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.ratelimits import storage_uri


def limited_app(tmp_path, **overrides):
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **overrides})
    with app.app_context():
        reset_database()
    make_user(app, "clin", "clinician")
    return app


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def hammer(client, token: str, count: int = 300) -> list:
    return [client.get("/api/v1/predictions/1", headers=bearer(token)) for _ in range(count)]


def assert_limited(response) -> None:
    assert response.status_code == 429
    assert response.json["error"]["code"] == "too_many_requests"
    assert int(response.headers["Retry-After"]) >= 1


def test_300_fast_requests_with_one_token_meet_a_429(app, client, api_token):
    responses = hammer(client, api_token)
    statuses = [r.status_code for r in responses]
    assert 429 in statuses
    assert set(statuses) == {404, 429}  # below the limit the API answers as usual
    assert_limited(next(r for r in responses if r.status_code == 429))


def test_switched_off_entirely(tmp_path):
    app = limited_app(tmp_path, RATE_LIMITS_ENABLED=False)
    token = issue_token(app, "clin")
    assert {r.status_code for r in hammer(app.test_client(), token)} == {404}


def test_counting_in_memory_starts_no_thread_per_request(tmp_path, monkeypatch):
    # Without REDIS_URL, limits' MemoryStorage started a 10 ms expiry timer again at the first count
    # after the last one ran: a new thread per request under a steady trickle (41 in 40 uploads),
    # each start 0.4-1.5 ms of the request's wall time on a busy host.
    app = limited_app(tmp_path, API_RATE_LIMIT="8/minute")
    token = issue_token(app, "clin")
    client = app.test_client()
    timers = []
    start = threading.Thread.start

    def counted_start(thread):
        if isinstance(thread, threading.Timer):
            timers.append(thread)
        return start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted_start)
    statuses = []
    for _ in range(9):
        statuses.append(client.get("/api/v1/predictions/1", headers=bearer(token)).status_code)
        time.sleep(0.02)  # past the old timer's 10 ms: the next count would start another
    assert statuses == [404] * 8 + [429]  # counted as before
    assert timers == []


def test_expired_counters_in_memory_are_still_dropped(monkeypatch):
    # The timer was what bounded the memory: a counter nobody reads again (an address that posted
    # once) is dropped once expired, now by the next count after the sweep interval.
    monkeypatch.setattr(limit_storage, "SWEEP_INTERVAL_S", 0.05)
    storage = storage_from_string(storage_uri(None))
    assert isinstance(storage, limit_storage.SweptMemoryStorage)
    storage.incr("addr:once", expiry=0.05)
    storage.incr("token:1", expiry=60)
    time.sleep(0.1)
    storage.incr("token:1", expiry=60)
    assert "addr:once" not in storage.storage and "addr:once" not in storage.expirations
    assert storage.get("token:1") == 2


def test_tokens_of_one_user_share_the_user_limit(tmp_path):
    app = limited_app(tmp_path, API_RATE_LIMIT="5/minute")
    first, second = issue_token(app, "clin"), issue_token(app, "clin")
    client = app.test_client()
    assert [r.status_code for r in hammer(client, first, 3)] == [404] * 3
    assert [r.status_code for r in hammer(client, second, 3)] == [404, 404, 429]


def test_uploads_are_limited_per_user_across_page_and_api(tmp_path):
    app = limited_app(tmp_path, UPLOAD_RATE_LIMIT="2/minute")
    token = issue_token(app, "clin")
    client = app.test_client()
    for _ in range(2):
        response = client.post("/api/v1/predictions", headers=bearer(token), data={"file": (b"", "a.jpeg")})
        assert response.status_code == 422
    assert_limited(client.post("/api/v1/predictions", headers=bearer(token), data={"file": (b"", "a.jpeg")}))
    # The same user in a browser: the upload page shares the bucket and answers with an HTML page.
    login = csrf_token(client, "/auth/login")
    client.post("/auth/login", data={"username": "clin", "password": "clinician-pass-1", "csrf_token": login})
    page = client.post(
        "/screen",
        data={"csrf_token": csrf_token(client, "/screen"), "files": (fixture_image("normal.jpeg"), "n.jpeg")},
        content_type="multipart/form-data",
    )
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "Too many requests" in page.get_data(as_text=True) and page.headers["Retry-After"]
    assert client.get("/screen").status_code == 200  # looking at the page is not an upload


def test_counters_in_redis_are_shared_by_workers(tmp_path):
    with RedisServer() as server:  # skips when redis-server is not installed (.ci/run installs it)
        url = server.url
        settings = {
            "REDIS_URL": url,
            "API_RATE_LIMIT": "10/minute",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
        }
        app = limited_app(tmp_path, **settings)
        token = issue_token(app, "clin")
        client = app.test_client()
        assert [r.status_code for r in hammer(client, token, 6)] == [404] * 6
        assert client.get("/api/v1/predictions", headers=bearer(token)).status_code == 403  # same bucket
        keys = redis.Redis.from_url(url).keys("*")
        assert any(b"/token:" in key for key in keys) and any(b"/user:" in key for key in keys)
        # Another worker (a second app on the same database and Redis) continues the same count.
        other = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, **settings})
        statuses = [r.status_code for r in hammer(other.test_client(), token, 5)]
        assert statuses == [404, 404, 404, 429, 429]
        for each in (app, other):
            with each.app_context():
                db.engine.dispose()


def test_deployments_sharing_one_redis_count_apart(tmp_path):
    # docs/jobs.md: JOBS_QUEUE_NAME "separates deployments that share one Redis". The queues were kept
    # apart, the rate-limit counters were not: five calls with token 1 of a test site used up the limit
    # of token 1 (another user, another database) of the production site, whose first call got a 429.
    with RedisServer() as server:
        sites = []
        for name in ("cxr-prod", "cxr-test"):
            folder = tmp_path / name
            folder.mkdir()
            app = limited_app(
                folder,
                REDIS_URL=server.url,
                API_RATE_LIMIT="5/minute",
                JOBS_QUEUE_NAME=name,
                SQLALCHEMY_DATABASE_URI=f"sqlite:///{folder / 'site.sqlite'}",
            )
            sites.append((app, issue_token(app, "clin")))
        (prod, prod_token), (test, test_token) = sites
        assert [r.status_code for r in hammer(test.test_client(), test_token, 6)] == [404] * 5 + [429]
        assert [r.status_code for r in hammer(prod.test_client(), prod_token, 6)] == [404] * 5 + [429]
        keys = redis.Redis.from_url(server.url).keys("*")
        assert any(b"/cxr-prod/token:" in key for key in keys) and any(b"/cxr-test/token:" in key for key in keys)
        for app, _ in sites:
            with app.app_context():
                db.engine.dispose()


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        # A hospital's hardening guide: Lua off, by renaming its commands away ...
        (("--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""), "unknown command 'EVALSHA'"),
        # ... or by an ACL user without @scripting
        (("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-@scripting"), "NoPermissionError"),
        # A Redis full (maxmemory reached, noeviction): every write refused
        (("--maxmemory", "1", "--maxmemory-policy", "noeviction"), "OutOfMemoryError"),
    ],
)
def test_a_redis_that_answers_but_refuses_the_counters_is_a_warning(tmp_path, settings, reason):
    # Flask-Limiter read each refused count as "storage unreachable" and the next PING as "recovered":
    # every process counted alone for good, its log flapping about every second, /readyz ready and silent.
    with RedisServer(*settings) as server:
        app = limited_app(tmp_path, REDIS_URL=server.url)
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 200  # screening goes on; the limits are per process
        warnings = [w for w in ready.json["warnings"] if w.startswith("rate limits counted per process")]
        assert len(warnings) == 1 and reason in warnings[0] and "with args" not in warnings[0], ready.json
        assert "script:" not in warnings[0], ready.json
        with app.app_context():
            db.engine.dispose()


def test_a_redis_that_takes_the_counters_is_no_warning(tmp_path):
    with RedisServer() as server:
        app = limited_app(tmp_path, REDIS_URL=server.url)
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 200 and ready.json["warnings"] == []
        with app.app_context():
            db.engine.dispose()


# Before the outage test: the one global limiter keeps counting in memory for a while after it.
def test_a_redis_socket_given_as_unix_url_holds_the_counters(tmp_path):
    # docs/deployment.md: REDIS_URL is "a redis://, rediss:// or unix:// URL". A unix:// one passed the
    # settings check, then stopped create_app with limits' "unknown storage scheme" traceback.
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"unix://{socket_path}"
        deadline = time.monotonic() + 10
        while True:  # ready once it answers: a request before that would be counted in memory instead
            try:
                redis.Redis.from_url(url, socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        app = limited_app(tmp_path, REDIS_URL=url, API_RATE_LIMIT="3/minute")
        token = issue_token(app, "clin")
        assert [r.status_code for r in hammer(app.test_client(), token, 4)] == [404, 404, 404, 429]
        keys = redis.Redis.from_url(url).keys("*")
        assert any(b"/token:" in key for key in keys), keys
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_redis_outage_is_logged_when_counting_falls_back_to_memory(tmp_path, capsys):
    # The fallback and the recovery were logged to a NullHandler: nothing in the log said that the
    # limits had become per process (each worker counting alone) while Redis was away.
    import json

    with RedisServer() as server:
        app = limited_app(tmp_path, REDIS_URL=server.url, API_RATE_LIMIT="10/minute")
        token = issue_token(app, "clin")
        client = app.test_client()
        assert [r.status_code for r in hammer(client, token, 2)] == [404, 404]
    capsys.readouterr()
    assert [r.status_code for r in hammer(client, token, 2)] == [404, 404]  # the app keeps answering
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line["logger"] == "flask-limiter" and line["level"] == "warning"]
    assert [line["message"] for line in warnings] == [
        "Rate limit storage unreachable - falling back to in-memory storage"
    ]
    with app.app_context():
        db.engine.dispose()


def test_a_stalled_redis_delays_a_request_by_at_most_a_second_per_limit(tmp_path):
    # Redis stalled (connection open, nothing answering): with redis-py's default of 5 s per call, an API
    # call (two limits) answered after 10 s, an upload (four) after 14 s, and while the counters stayed
    # in memory each look at whether Redis was back held a request, a page GET too, for 5 s.
    with RedisServer() as server:
        app = limited_app(tmp_path, REDIS_URL=server.url)
        token = issue_token(app, "clin")
        client = app.test_client()
        assert [r.status_code for r in hammer(client, token, 1)] == [404]
        with server.stalled():
            started = time.monotonic()
            assert [r.status_code for r in hammer(client, token, 1)] == [404]  # counted in memory
            assert time.monotonic() - started < 3.5
    with app.app_context():
        db.engine.dispose()
