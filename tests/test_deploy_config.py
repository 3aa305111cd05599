"""Deployment configuration: gunicorn settings from the environment, the worker start hook, the
image recipe (Dockerfile, lock file, .dockerignore), compose files and the container health check."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import runpy
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from gunicorn.config import Config as GunicornConfig

from deploy import gunicorn_hooks
from tests.helpers import app_with_model_file, reset_database
from webapp import create_app
from webapp.config import TestingConfig

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_ENV = (
    "WEB_WORKERS",
    "INFERENCE_THREADS",
    "WEB_THREADS",
    "WEB_WORKER_CONNECTIONS",
    "WEB_TIMEOUT",
    "WEB_GRACEFUL_TIMEOUT",
    "WEB_MAX_REQUESTS",
    "WEB_MAX_REQUESTS_JITTER",
    "BIND",
    "GUNICORN_ACCESS_LOG",
    "LOG_LEVEL",
    "MODEL_LOAD_TIMEOUT",
)


def load_gunicorn_conf(monkeypatch, cores: int = 2, **env: str) -> dict:
    for name in GUNICORN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(gunicorn_hooks, "cpu_count", lambda: cores)
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    # gunicorn validates every setting it knows when it reads the file; do the same here.
    cfg = GunicornConfig()
    for name, value in settings.items():
        if name in cfg.settings:
            cfg.set(name, value)
    return settings


@pytest.mark.parametrize("cores, workers, threads", [(1, 1, 1), (2, 2, 1), (4, 4, 1), (16, 8, 2), (64, 8, 8)])
def test_default_sizing_splits_cores_between_workers_and_tensorflow(monkeypatch, cores, workers, threads):
    conf = load_gunicorn_conf(monkeypatch, cores=cores)
    assert (conf["workers"], conf["inference_threads"]) == (workers, threads)
    assert workers * threads <= cores


def test_production_defaults(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    assert conf["preload_app"] is False  # TensorFlow is not fork-safe
    assert conf["worker_class"] == "deploy.gunicorn_worker.JsonRefusalWorker" and conf["threads"] == 2
    # A worker accepts only while a request thread is free, so concurrent uploads spread over the
    # workers; with no spare slot there is no keep-alive (and gunicorn's warning about it is avoided).
    assert conf["worker_connections"] == conf["threads"] and conf["keepalive"] == 0
    assert conf["timeout"] >= 60  # a cold model load happens before the first heartbeat
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["errorlog"] == "-" and conf["accesslog"] is None  # the app logs each request as JSON
    assert callable(conf["post_worker_init"]) and callable(conf["post_fork"])


def test_everything_is_overridable_from_the_environment(monkeypatch):
    conf = load_gunicorn_conf(
        monkeypatch,
        WEB_WORKERS="3",
        INFERENCE_THREADS="4",
        WEB_THREADS="1",
        WEB_TIMEOUT="300",
        WEB_MAX_REQUESTS="0",
        BIND="127.0.0.1:9000",
        GUNICORN_ACCESS_LOG="-",
        LOG_LEVEL="WARNING",
    )
    assert (conf["workers"], conf["inference_threads"], conf["threads"]) == (3, 4, 1)
    assert conf["worker_connections"] == 1 and conf["keepalive"] == 0  # follows WEB_THREADS
    assert conf["timeout"] == 300 and conf["bind"] == "127.0.0.1:9000"
    assert conf["max_requests"] == 0 and conf["max_requests_jitter"] == 0
    assert conf["accesslog"] == "-" and conf["loglevel"] == "warning"


def test_spare_connection_slots_bring_keep_alive_back(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, WEB_WORKER_CONNECTIONS="64")
    assert conf["worker_connections"] == 64 and conf["keepalive"] == 5


def test_inference_threads_follow_a_worker_override(monkeypatch):
    assert load_gunicorn_conf(monkeypatch, cores=8, WEB_WORKERS="2")["inference_threads"] == 4


@pytest.mark.parametrize("value", ["two", "-1", "0", "1.5"])
def test_bad_numbers_are_refused_with_the_variable_named(monkeypatch, capsys, value):
    with pytest.raises(SystemExit) as stop:
        load_gunicorn_conf(monkeypatch, WEB_WORKERS=value)
    assert stop.value.code == 4
    assert capsys.readouterr().err.startswith("gunicorn: configuration error: WEB_WORKERS must be")


@pytest.mark.parametrize("name", ["WEB_TIMEOUT", "WEB_GRACEFUL_TIMEOUT", "MODEL_LOAD_TIMEOUT"])
def test_a_period_past_a_day_is_refused(monkeypatch, capsys, name):
    # A period of 10**20 s would overflow gunicorn's or the model loader's wait.
    with pytest.raises(SystemExit) as stop:
        load_gunicorn_conf(monkeypatch, **{name: str(10**20)})
    assert stop.value.code == 4
    assert capsys.readouterr().err.startswith(f"gunicorn: configuration error: {name} must be from")


@pytest.mark.parametrize("value", ["127.0.0.1:99999", "0.0.0.0:65536"])
def test_a_port_gunicorn_cannot_bind_is_refused_with_the_variable_named(monkeypatch, capsys, value):
    # BIND=127.0.0.1:99999 ended in gunicorn's OverflowError traceback.
    with pytest.raises(SystemExit) as stop:
        load_gunicorn_conf(monkeypatch, BIND=value)
    assert stop.value.code == 4
    assert capsys.readouterr().err.startswith("gunicorn: configuration error: BIND's port must be from 0 to 65535")


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "[::1]:8443", "unix:/run/cxr.sock", "localhost", ""])
def test_bind_takes_what_gunicorn_takes(monkeypatch, value):
    assert load_gunicorn_conf(monkeypatch, BIND=value)["bind"] == (value or "0.0.0.0:8000")


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # docker --cpus=1.5 rounds up
        ({"cpu.max": "max 100000\n"}, None),  # no quota: all cores the process may use
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cpu_count_honours_container_quotas(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cores = len(os.sched_getaffinity(0))
    assert gunicorn_hooks.cpu_count(tmp_path) == (min(cores, expected) if expected else cores)


def test_heartbeat_keeps_a_loading_worker_alive_but_only_up_to_the_limit():
    beats = []
    with gunicorn_hooks.heartbeat_while_loading(lambda: beats.append(time.monotonic()), interval=0.05, limit=0.5):
        time.sleep(1.0)  # a load that outlasts the limit
    assert len(beats) >= 2
    assert beats[-1] - beats[0] <= 0.5  # the beats stopped at the limit although the load went on
    count = len(beats)
    time.sleep(0.2)
    assert len(beats) == count  # no beats once the load is over


def test_workers_cap_heap_growth_right_after_the_fork(monkeypatch):
    calls = []
    monkeypatch.setattr(gunicorn_hooks, "limit_heap_growth", lambda: calls.append("mallopt") or True)
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    worker = type("Worker", (), {})()
    conf["post_fork"](None, worker)
    assert calls == ["mallopt"] and worker.forked_at > 0


def test_heap_limits_apply_on_glibc_in_a_fresh_process():
    import platform

    script = "from deploy.gunicorn_hooks import limit_heap_growth; print(limit_heap_growth())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("content", [None, b"PK\x03\x04 truncated"])
def test_worker_hook_survives_a_missing_or_corrupt_model(tmp_path, caplog, content):
    app = app_with_model_file(tmp_path, content)
    worker_log = logging.getLogger("test.gunicorn.error")
    gunicorn_hooks.load_model_in_worker(app, 1, worker_log)  # must not raise: the worker lives on
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "model could not be loaded" in errors[0].getMessage()
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and str(app.config["MODEL_PATH"]) in response.json["reasons"][0]
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # still one error


def test_worker_hook_loads_the_shipped_model(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path})
    gunicorn_hooks.load_model_in_worker(app, 1, logging.getLogger("test.gunicorn.error"))
    assert any("worker ready" in r.getMessage() for r in caplog.records)
    with app.app_context():
        reset_database()  # a database no one migrated is not ready either
    assert app.test_client().get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "seconds, scheme, expected",
    [
        (0, "https", None),  # off by default: a plain-http intranet must not be locked out
        (31536000, "http", None),  # browsers ignore it over http; it is only sent over https
        (31536000, "https", "max-age=31536000"),
    ],
)
def test_hsts_is_opt_in_and_https_only(tmp_path, seconds, scheme, expected):
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "HSTS_SECONDS": seconds})
    response = app.test_client().get("/healthz", base_url=f"{scheme}://localhost")
    assert response.headers.get("Strict-Transport-Security") == expected


# --- the image recipe ---------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (Path(sys.executable).parent / "hadolint").exists(),
    reason="hadolint not installed (requirements-dev.txt)",
)
def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    dockerfiles = ["Dockerfile", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docker/*/Dockerfile"))]
    done = subprocess.run([hadolint, *dockerfiles], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_installs_the_lock_runs_unprivileged_and_keeps_data_in_a_volume():
    text = dockerfile()
    # python:3.11-slim unless the builder names another Debian base (CI: one made by debootstrap).
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "--no-deps -r /tmp/requirements.lock" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert 'VOLUME ["/app/instance"]' in text and "INSTANCE_DIR=/app/instance" in text
    assert "HEALTHCHECK" in text and "docker/healthcheck.py" in text
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in text
    assert "COPY webapp/ webapp/" in text  # code and the shipped model


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version
    return pins


def test_lock_file_is_the_current_closure_of_requirements_txt():
    lock = requirement_pins(ROOT / "requirements.lock")
    for name, version in requirement_pins(ROOT / "requirements.txt").items():
        assert lock.get(name) == version, f"{name}: requirements.txt says {version}, lock {lock.get(name)}"
    closure = runpy.run_path(str(ROOT / "scripts" / "lock_requirements.py"))
    current = closure["closure"](closure["top_level"](ROOT / "requirements.txt"))
    assert lock == {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in current.items()}, (
        "requirements.lock is stale: run .venv/bin/python scripts/lock_requirements.py"
    )
    for name, version in lock.items():
        assert metadata.version(name) == version  # the image gets what the tests ran with


def test_dockerignore_keeps_secrets_and_bulk_out_but_the_model_in():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "instance/*", ".env", "tests"} <= ignored
    # The backups the docs copy off the server land in the folder the admin runs compose in.
    assert {"*.sqlite", "*.dump"} <= ignored
    assert not any(pattern.startswith(("webapp", "migrations", "docker/")) for pattern in ignored)


def test_compose_files_fit_the_image():
    app = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["app"]
    assert app["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?")  # refuses to start without one
    assert "instance:/app/instance" in app["volumes"]
    postgres = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())["services"]
    assert postgres["app"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert postgres["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert postgres["db"]["image"] == "${POSTGRES_IMAGE:-postgres:15}"
    # the job worker shares the app's image, instance volume and database, and starts after it
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert worker["command"][-2:] == ["jobs", "worker"] and "instance:/app/instance" in worker["volumes"]
    assert worker["depends_on"]["app"]["condition"] == "service_healthy"
    assert postgres["worker"]["environment"]["DATABASE_URL"] == postgres["app"]["environment"]["DATABASE_URL"]


DICOM_TLS = ("DICOM_TLS_CERT_FILE", "DICOM_TLS_KEY_FILE", "DICOM_TLS_CA_FILE")


def test_every_service_of_the_image_gets_the_same_settings():
    # The worker sends the PACS results under DICOM_AE_TITLE, yet only the DICOM node got it: a site
    # that set its own AE title had its results sent as CXRSCREEN (and refused by a PACS that checks
    # the calling AE); the outbox page said "nowhere" as the app lacked DICOM_RESULTS_DESTINATION;
    # and with the PostgreSQL override the DICOM node kept writing to SQLite in the volume.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    of_the_image = [name for name, service in services.items() if service["image"] == services["app"]["image"]]
    assert of_the_image == ["app", "worker", "dicom"]
    for name in of_the_image:
        assert services[name]["environment"] == services["app"]["environment"], name
    for setting in ("DICOM_AE_TITLE", "DICOM_ALLOWED_CALLING_AETS", "DICOM_RESULTS_DESTINATION", *DICOM_TLS):
        assert setting in services["app"]["environment"]
    postgres = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())["services"]
    for name in of_the_image:
        assert postgres[name]["environment"]["DATABASE_URL"] == postgres["app"]["environment"]["DATABASE_URL"], name


def test_https_stack_publishes_only_the_proxy_and_shares_one_configuration():
    services = yaml.safe_load((ROOT / "docker-compose.https.yml").read_text())["services"]
    # Only the proxy publishes a port, and the DICOM node its DICOM port (DICOM is no HTTP to proxy).
    assert [name for name, service in services.items() if "ports" in service] == ["proxy", "dicom"]
    assert services["dicom"]["ports"] == ["${DICOM_PORT:-11112}:11112"]
    assert services["proxy"]["ports"] == ["${HTTPS_BIND:-0.0.0.0}:${HTTPS_PORT:-443}:8443"]
    assert services["app2"]["profiles"] == ["replicas"]
    for replica in ("app", "app2"):
        environment = services[replica]["environment"]
        assert environment == services["app"]["environment"]  # one SECRET_KEY, database, Redis for all
        assert environment["TRUSTED_PROXIES"] == "1" and environment["SESSION_COOKIE_SECURE"] == "true"
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
        assert (
            environment["DATABASE_URL"].startswith("postgresql+psycopg://")
            and "@db:5432/" in environment["DATABASE_URL"]
        )
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert services["db"]["image"] == "${POSTGRES_IMAGE:-cxr-postgres:15}"
    assert services["redis"]["image"] == "${REDIS_IMAGE:-cxr-redis:7}"
    # the job worker takes the same settings (Redis queue) and shares the instance volume with the web replicas
    assert services["worker"]["environment"] == services["app"]["environment"]
    assert services["worker"]["command"][-2:] == ["jobs", "worker"]
    assert services["worker"]["volumes"] == services["app"]["volumes"] == ["instance:/app/instance"]
    # The DICOM node was missing: the stack "for a hospital network" took no films from the PACS, the
    # docs said to add it with `<<: *app` (which brings the web health check along), and the worker
    # lacked the DICOM settings it sends the results with.
    assert services["dicom"]["command"][-2:] == ["dicom", "listen"] and services["dicom"]["profiles"] == ["dicom"]
    assert services["dicom"]["environment"] == services["app"]["environment"]
    assert services["dicom"]["volumes"] == services["app"]["volumes"]  # its spool, for the worker
    assert services["dicom"]["healthcheck"] == services["worker"]["healthcheck"] == {"disable": True}
    for setting in ("DICOM_AE_TITLE", "DICOM_ALLOWED_CALLING_AETS", "DICOM_RESULTS_DESTINATION", *DICOM_TLS):
        assert setting in services["worker"]["environment"]


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "unavailable", "reasons": ["model could not be loaded"]}')

    def log_message(self, *args):
        pass


def container_health_check(port: int, **env: str) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command against a server on this loopback port."""
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py")],
        capture_output=True,
        text=True,
        env={"BIND": f"0.0.0.0:{port}", **env},
        timeout=30,
    )


@pytest.mark.parametrize("status, exit_code", [(200, 0), (503, 1)])
def test_container_health_check_follows_readyz(monkeypatch, status, exit_code):
    handler = type("Probe", (_Probe,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = container_health_check(server.server_address[1])
    finally:
        server.shutdown()
    assert done.returncode == exit_code
    if exit_code:
        assert "model could not be loaded" in done.stdout


def test_container_health_check_fails_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = container_health_check(port)
    assert done.returncode == 1 and "readyz unreachable" in done.stdout


def run_backup_script(instance: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "backup_sqlite.py"), *args],
        env={"PATH": os.environ["PATH"], "APP_ENV": "production", "INSTANCE_DIR": str(instance), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sqlite_restore_refuses_a_file_that_is_not_this_apps_database(tmp_path):
    # Restoring the job queue's jobs.sqlite (it sits beside cxr.sqlite) used to replace the app's
    # database with it: 'restored', then every page failed on missing tables.
    import sqlite3

    instance = tmp_path / "instance"
    instance.mkdir()
    with sqlite3.connect(instance / "cxr.sqlite") as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0007_directory_access')")
    before = (instance / "cxr.sqlite").read_bytes()
    with sqlite3.connect(tmp_path / "jobs.sqlite") as conn:
        conn.execute("CREATE TABLE task (id INTEGER PRIMARY KEY, data BLOB)")
    (tmp_path / "torn.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(4000))
    for name, reason in [("jobs.sqlite", "is not a database of this app"), ("torn.sqlite", "not a readable")]:
        refused = run_backup_script(instance, "restore", str(tmp_path / name))
        assert refused.returncode == 1 and reason in refused.stderr and "Traceback" not in refused.stderr
    assert (instance / "cxr.sqlite").read_bytes() == before
    for args, reason in [(("backup", str(tmp_path / "no" / "b.sqlite")), "no folder"), (("backup", "x"), "")]:
        refused = run_backup_script(tmp_path / "empty", *args)
        assert refused.returncode == 1 and reason in refused.stderr and "Traceback" not in refused.stderr


def test_sqlite_backup_refuses_a_bad_app_env_with_one_line(tmp_path):
    # The import of the settings was guarded, but APP_ENV is read when the database is looked up:
    # APP_ENV=prod ended in a ConfigError traceback.
    refused = run_backup_script(tmp_path, "backup", str(tmp_path / "b.sqlite"), APP_ENV="prod")
    assert refused.returncode == 4 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        "backup_sqlite: configuration error: APP_ENV must be one of ['development', 'production', 'testing'], "
        "not 'prod'"
    )
    assert not (tmp_path / "b.sqlite").exists()


def test_sqlite_backup_and_restore_round_trip(tmp_path):
    import sqlite3

    live = tmp_path / "cxr.sqlite"
    with sqlite3.connect(live) as conn:
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, label TEXT)")
        conn.execute("INSERT INTO predictions (label) VALUES ('NORMAL'), ('PNEUMONIA')")
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0007_directory_access')")

    def run(*args):
        return run_backup_script(tmp_path, *args)

    umask = os.umask(0o022)  # the usual one, under which the copy was written 0644
    try:
        assert run("backup", str(tmp_path / "b.sqlite")).returncode == 0
    finally:
        os.umask(umask)
    # The copy holds every patient's data: it was written 0644 (umask) into the instance volume.
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("b.sqlite*")} == {"b.sqlite": 0o600}
    assert run("backup", str(tmp_path / "b.sqlite")).returncode == 1  # never overwrites a backup
    with sqlite3.connect(live) as conn:
        conn.execute("DELETE FROM predictions")
    assert run("restore", str(tmp_path / "b.sqlite")).returncode == 0
    with sqlite3.connect(live) as conn:
        assert conn.execute("SELECT label FROM predictions ORDER BY id").fetchall() == [("NORMAL",), ("PNEUMONIA",)]
    refused = run_backup_script(tmp_path, "backup", str(tmp_path / "c.sqlite"), DATABASE_URL="postgresql://cxr@db/cxr")
    # The README has no word on pg_dump: the message named it, and the admin found nothing there.
    assert refused.returncode == 1 and "pg_dump / pg_restore (docs/deployment.md, Backup and restore)" in refused.stderr


def test_a_sqlite_backup_cut_short_by_a_full_disk_leaves_no_file(tmp_path):
    """Reproduced with the instance folder on a full tmpfs: `backup` failed ("database or disk is full")
    and left an empty backup file, which the retry then refused to overwrite. The disk fills here by
    the process's file size limit (SQLite's writes past it fail as on a full disk)."""
    import resource
    import sqlite3

    with sqlite3.connect(tmp_path / "cxr.sqlite") as conn:
        conn.execute("CREATE TABLE films (data BLOB)")
        conn.execute("INSERT INTO films VALUES (?)", (os.urandom(400_000),))
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0015_directory_entry_id')")
    limit = 100_000

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "backup_sqlite.py"), "backup", str(tmp_path / "b.sqlite")],
        env={"PATH": os.environ["PATH"], "APP_ENV": "production", "INSTANCE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_disk,
    )
    assert done.returncode == 1 and "failed" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.glob("b.sqlite*")) == []
    assert run_backup_script(tmp_path, "backup", str(tmp_path / "b.sqlite")).returncode == 0  # space again


def test_sqlite_restore_on_a_new_server_writes_a_private_database(tmp_path):
    """Disaster recovery: the backup restored into an empty instance folder. The live database was
    created by SQLite with the umask's mode, 0644: every patient's data readable by any local user
    until the app next opened it."""
    import sqlite3

    backup = tmp_path / "b.sqlite"
    with sqlite3.connect(backup) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0007_directory_access')")
    instance = tmp_path / "new-server"
    instance.mkdir()
    umask = os.umask(0o022)
    try:
        assert run_backup_script(instance, "restore", str(backup)).returncode == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((instance / "cxr.sqlite").stat().st_mode) == 0o600


def test_sqlite_backup_of_the_live_wal_database_is_one_file(tmp_path):
    """The app runs SQLite in WAL mode: a backup then left backup.sqlite-shm and backup.sqlite-wal
    beside it (opened read-only to be checked, it could not remove them), which the documented `rm`
    of the backup left behind in the instance volume. It is one self-contained file, and restores."""
    import sqlite3

    live = tmp_path / "cxr.sqlite"
    with sqlite3.connect(live) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0007_directory_access')")
    assert run_backup_script(tmp_path, "backup", str(tmp_path / "b.sqlite")).returncode == 0
    assert sorted(p.name for p in tmp_path.glob("b.sqlite*")) == ["b.sqlite"]
    with sqlite3.connect(live) as conn:
        conn.execute("DELETE FROM alembic_version")
    assert run_backup_script(tmp_path, "restore", str(tmp_path / "b.sqlite")).returncode == 0
    with sqlite3.connect(live) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0007_directory_access",)]


def test_a_sqlite_migration_waits_for_the_one_in_progress(tmp_path):
    # podman-compose starts the app, the worker and the DICOM node at once (podman 4.3 has no
    # service_healthy) and each entrypoint migrates: three at once on a fresh SQLite file failed one
    # or two of them in most runs ("table audit_events already exists", "expected to match one row
    # when updating ... alembic_version"). Another process holding the lock stands for one migrating.
    import fcntl

    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 40,
        "INSTANCE_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("DATABASE_URL", None)
    with open(tmp_path / "cxr.sqlite.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = subprocess.Popen(
            [sys.executable, "docker/migrate.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        with pytest.raises(subprocess.TimeoutExpired):
            start.wait(timeout=10)  # waits its turn: an upgrade alone takes a few seconds
        assert not (tmp_path / "cxr.sqlite").exists()
    output = start.communicate(timeout=300)[0].decode()
    assert start.returncode == 0, output
    assert "Running upgrade  -> 0001" in output


WORKER_START = """
import logging, pathlib, sys
from deploy import gunicorn_hooks
from webapp import create_app
from webapp.config import TestingConfig
from webapp.logs import install_json_logging

app = create_app(TestingConfig, {"INSTANCE_DIR": pathlib.Path(sys.argv[1])})
install_json_logging("webapp")
gunicorn_hooks.load_model_in_worker(app, 1, logging.getLogger("webapp.worker"))
from tensorflow.python.util import _pywrap_util_port
logging.getLogger("webapp.worker").warning("onednn=%s", _pywrap_util_port.IsMklEnabled())
"""


def test_a_worker_starts_with_json_lines_only_and_onednn_on(tmp_path):
    """TensorFlow's oneDNN notice came twice, as plain text, at every worker's start, whatever
    TF_CPP_MIN_LOG_LEVEL said; the notice goes, oneDNN stays on (it is measured faster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run(
        [sys.executable, "-c", WORKER_START, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert "oneDNN" not in done.stderr
    assert [json.loads(line)["message"] for line in lines if "onednn=" in line] == ["onednn=True"]
    for line in lines:
        json.loads(line)  # every line, the worker's own included


def test_the_shipped_proxy_drops_a_clients_own_prefix():
    """The app trusts X-Forwarded-Prefix from the proxy (TRUSTED_PROXIES=1), and nginx passes on a header
    it does not set itself: a client's `X-Forwarded-Prefix: //elsewhere.example` would have placed the
    app's links and redirects on another host. An empty value is not sent at all."""
    config = (ROOT / "docker" / "nginx" / "nginx.conf").read_text()
    assert re.search(r'^\s*proxy_set_header X-Forwarded-Prefix "";', config, re.MULTILINE)


class _UnderScriptName(_Probe):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        # gunicorn with SCRIPT_NAME=/cxr: anything outside it is a 500 page
        self.send_response(200 if self.path == "/cxr/readyz" else 500)
        self.end_headers()


def test_container_health_check_probes_under_script_name():
    """With SCRIPT_NAME=/cxr (a proxy passing the app's path on), gunicorn answered the health check's
    /readyz with a 500 page, 'Request path '/readyz' does not start with SCRIPT_NAME', and the container
    was marked unhealthy while it served (found with the real app under gunicorn)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _UnderScriptName)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = container_health_check(server.server_address[1], SCRIPT_NAME="/cxr")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout
