"""Settings from the environment (webapp/env.py): a value a process cannot run with stops it at
start-up with one line naming the variable, never a traceback or a silent fallback."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.config import _database_url
from webapp.env import CONFIG_ERROR_EXIT, ConfigError, env_bool, env_float, env_int

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "whole number"),
        ("1.5", "whole number"),
        ("-1", "from 1 to 65535"),
        ("0", "from 1"),
        ("70000", "to 65535"),
    ],
)
def test_bad_whole_numbers_name_the_variable(monkeypatch, value, message):
    monkeypatch.setenv("SOME_SETTING", value)
    with pytest.raises(ConfigError, match=f"SOME_SETTING must be .*{message}"):
        env_int("SOME_SETTING", 5, minimum=1, maximum=65535)


@pytest.mark.parametrize(("value", "expected"), [(None, 5), ("", 5), ("  ", 5), (" 7 ", 7), ("65535", 65535)])
def test_unset_or_empty_means_the_default(monkeypatch, value, expected):
    monkeypatch.delenv("SOME_SETTING", raising=False)
    if value is not None:
        monkeypatch.setenv("SOME_SETTING", value)
    assert env_int("SOME_SETTING", 5, minimum=1, maximum=65535) == expected


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-5"])
def test_bad_numbers_are_refused(monkeypatch, value):
    monkeypatch.setenv("SOME_MS", value)
    with pytest.raises(ConfigError, match="SOME_MS must be a number"):
        env_float("SOME_MS", 0.0)


def test_a_number_past_its_maximum_is_refused(monkeypatch):
    monkeypatch.setenv("SOME_MS", "1e300")
    with pytest.raises(ConfigError, match="SOME_MS must be a number from 0 to 1000, not '1e300'"):
        env_float("SOME_MS", 0.0, maximum=1000.0)
    monkeypatch.setenv("SOME_MS", "1000")
    assert env_float("SOME_MS", 0.0, maximum=1000.0) == 1000.0


@pytest.mark.parametrize(
    ("value", "expected"), [("TRUE", True), ("yes", True), ("1", True), ("off", False), ("0", False)]
)
def test_booleans_read_the_usual_words(monkeypatch, value, expected):
    monkeypatch.setenv("SOME_FLAG", value)
    assert env_bool("SOME_FLAG", not expected) is expected


@pytest.mark.parametrize("value", ["ture", "flase", "enabled", "2"])
def test_a_mistyped_boolean_is_refused_not_read_as_false(monkeypatch, value):
    # `RATE_LIMITS_ENABLED=ture` used to turn every rate limit off without a word.
    monkeypatch.setenv("SOME_FLAG", value)
    with pytest.raises(ConfigError, match=f"SOME_FLAG must be true or false.*{value}"):
        env_bool("SOME_FLAG", True)


def start(command: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "APP_ENV", "LDAP_URL")}
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "SECRET_KEY": secrets.token_hex(32), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_UPLOAD_MB", "abc", "MAX_UPLOAD_MB must be a whole number, not 'abc'"),
        # audit prune deleted every audit event with a retention of 0 or below
        ("AUDIT_RETENTION_DAYS", "-1", "AUDIT_RETENTION_DAYS must be from 1 to 36500, not -1"),
        # 0 is not "keep for ever" (that is unset): it would delete every prediction
        ("PREDICTION_RETENTION_DAYS", "0", "PREDICTION_RETENTION_DAYS must be from 1 to 36500, not 0"),
        ("SESSION_COOKIE_SECURE", "ture", "SESSION_COOKIE_SECURE must be true or false"),
        # Flask-Limiter skipped a limit it could not read: the API ran unlimited
        ("API_RATE_LIMIT", "three a minute", "API_RATE_LIMIT must be limits like 20/second;600/minute"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL must be a redis://, rediss:// or unix:// URL"),
        ("DATABASE_URL", "mysql://cxr:hunter2secret@db/cxr", "DATABASE_URL must be a sqlite:/// or postgresql:// URL"),
        # a password's @ not percent-encoded: SQLAlchemy's traceback quoting a piece of the password as the port
        ("DATABASE_URL", "postgresql://cxr:hunter2secret@x:y@db:5432/cxr", "DATABASE_URL cannot be read as user,"),
        # ... or the rest of the password read as the host name, which the driver printed at each connection
        ("DATABASE_URL", "postgres://cxr:hunter2secret@b@db/cxr", "DATABASE_URL cannot be read as user,"),
        ("SECRET_KEY", "short", "SECRET_KEY is missing, a well-known default or shorter than 32 characters"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be debug, info, warning, error or critical"),
        ("LOG_LEVEL", "notset", "LOG_LEVEL must be debug, info, warning, error or critical"),
        # a period past what date arithmetic holds: an OverflowError traceback at start-up or in a request
        ("SESSION_MAX_HOURS", "1000000000000", "SESSION_MAX_HOURS must be from 1 to 8760"),
        ("WORKLIST_HOURS", "100000000000", "WORKLIST_HOURS must be from 1 to 8760"),
        # docs/deployment.md: a count of at least 1; TensorFlow read 0 as every core, the worker no longer yielded
        ("JOBS_WORKER_TF_THREADS", "0", "JOBS_WORKER_TF_THREADS must be at least 1, not 0"),
        # a city alone is no zone name: every page would have failed at its first time
        ("DISPLAY_TIMEZONE", "Berlin", "DISPLAY_TIMEZONE must be an IANA time zone name such as Europe/Berlin"),
        # the batch thread's wait overflowed at the first upload: it died and every upload hung
        ("INFERENCE_BATCH_WINDOW_MS", "1e300", "INFERENCE_BATCH_WINDOW_MS must be a number from 0 to 1000"),
        # the DICOM node stopped with pynetdicom's 50-line traceback
        ("DICOM_AE_TITLE", "CXRSCREEN-RADIOLOGY", "DICOM_AE_TITLE: an AE title is 1 to 16 printable ASCII characters"),
        # accepted as printable, then refused by pynetdicom at the node's start with its ValueError
        ("DICOM_AE_TITLE", "RADIOLOGÍA", "DICOM_AE_TITLE: an AE title is 1 to 16 printable ASCII characters"),
        (
            "DICOM_ALLOWED_CALLING_AETS",
            "PACS,ORTHANC-MAIN-ARCHIVE",
            "DICOM_ALLOWED_CALLING_AETS: an AE title is 1 to 16",
        ),
    ],
)
def test_the_app_refuses_a_bad_setting_with_one_line(tmp_path, name, value, message):
    result = start([sys.executable, "-c", "import wsgi"], INSTANCE_DIR=str(tmp_path), **{name: value})
    assert result.returncode == CONFIG_ERROR_EXIT
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cxr-screen: configuration error: {message}")
    assert "Traceback" not in result.stderr and "hunter2secret" not in result.stderr


def test_gunicorn_stops_with_one_line_before_any_worker_starts(tmp_path):
    # Every worker used to fail on its own, each with a traceback, then gunicorn's arbiter added its own.
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    result = start(command, INSTANCE_DIR=str(tmp_path), MAX_UPLOAD_MB="abc", BIND="127.0.0.1:0", WEB_WORKERS="2")
    assert result.returncode == CONFIG_ERROR_EXIT
    assert "gunicorn: configuration error: MAX_UPLOAD_MB must be a whole number, not 'abc'" in result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # 0 stopped the heartbeat at once: a worker whose model loads slower than WEB_TIMEOUT was killed
        ("MODEL_LOAD_TIMEOUT", "MODEL_LOAD_TIMEOUT must be from 1 to 86400, not 0"),
        # 0 cut every request in flight at a restart, where the setting is the time given to finish them
        ("WEB_GRACEFUL_TIMEOUT", "WEB_GRACEFUL_TIMEOUT must be from 1 to 86400, not 0"),
    ],
)
def test_gunicorn_periods_are_at_least_a_second(tmp_path, name, message):
    # docs/deployment.md: "a size, count, period or port of at least 1".
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    result = start(command, INSTANCE_DIR=str(tmp_path), BIND="127.0.0.1:0", **{name: "0"})
    assert result.returncode == CONFIG_ERROR_EXIT
    assert f"gunicorn: configuration error: {message}" in result.stderr


def test_the_flask_cli_refuses_a_bad_setting_with_one_line(tmp_path):
    flask = Path(sys.executable).parent / "flask"
    result = start(
        [str(flask), "--app", "wsgi", "audit", "prune"], INSTANCE_DIR=str(tmp_path), AUDIT_RETENTION_DAYS="0"
    )
    assert result.returncode == CONFIG_ERROR_EXIT
    assert (
        result.stderr.strip() == "cxr-screen: configuration error: AUDIT_RETENTION_DAYS must be from 1 to 36500, not 0"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MODEL_PATH", str(ROOT / "webapp" / "weights" / "cxr_pneumonia.keras")),
        ("LDAP_USER_FILTER", "(uid={username})"),
        ("JOBS_QUEUE_NAME", "cxr-jobs"),
        # empty was every interface, where the default is the loopback
        ("DICOM_BIND", "127.0.0.1"),
    ],
)
def test_a_text_setting_set_but_empty_is_its_default(tmp_path, name, expected):
    # docs/deployment.md: "a variable that is set but empty counts as unset (its default), as compose
    # passes ${VAR:-}"; these four were taken as the empty text itself.
    code = f"from webapp.config import Config; print(Config.{name})"
    result = start([sys.executable, "-c", code], INSTANCE_DIR=str(tmp_path), **{name: ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_an_empty_log_level_is_the_default(tmp_path):
    # `LOG_LEVEL: ${LOG_LEVEL:-}` stopped the app: "LOG_LEVEL must be debug, info, warning or error, not ''".
    result = start([sys.executable, "-c", "import wsgi"], INSTANCE_DIR=str(tmp_path), LOG_LEVEL="")
    assert result.returncode == 0, result.stderr


def test_a_sqlite_path_may_hold_at_signs(tmp_path, monkeypatch):
    # The default database lies in INSTANCE_DIR, which may be named like a systemd template's instance.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    folder = tmp_path / "cxr@site1@ward"
    assert _database_url(folder) == f"sqlite:///{folder / 'cxr.sqlite'}"
