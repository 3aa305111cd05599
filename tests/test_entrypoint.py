"""docker/entrypoint.sh, run outside a container: it waits for the database, migrates, then execs.

`flask` is replaced on PATH by a stub that records its arguments (the real migration is covered
by test_migrations.py); the database check and the exec are the real ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


@pytest.fixture
def stub_bin(tmp_path) -> Path:
    """A folder with a fake `flask` that logs its arguments and exits with $FLASK_STUB_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    flask = bin_dir / "flask"
    flask.write_text('#!/bin/sh\necho "flask $*" >> "$STUB_LOG"\nexit "${FLASK_STUB_RC:-0}"\n')
    flask.chmod(0o755)
    return bin_dir


def entrypoint_env(stub_bin: Path, tmp_path: Path, database_url: str, **env: str) -> dict[str, str]:
    return {
        "PATH": f"{stub_bin}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATABASE_URL": database_url,
        "APP_ENV": "production",
        "INSTANCE_DIR": str(tmp_path),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "TMPDIR": str(tmp_path),  # the restart back-off's note, one per container (test)
        **env,
    }


def run_entrypoint(stub_bin: Path, tmp_path: Path, database_url: str, *command: str, **env: str):
    return subprocess.run(
        [str(ENTRYPOINT), *command],
        env=entrypoint_env(stub_bin, tmp_path, database_url, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_waits_while_the_database_is_down_then_migrates_then_execs(stub_bin, tmp_path):
    # SQLite cannot open a file in a folder that does not exist yet: the database is "down"
    # until the folder appears, here after the second failed attempt, as a server would come up.
    late = tmp_path / "not-yet"
    process = subprocess.Popen(
        [str(ENTRYPOINT), "sh", "-c", 'echo "served" >> "$STUB_LOG"'],
        env=entrypoint_env(stub_bin, tmp_path, f"sqlite:///{late}/cxr.sqlite", DB_WAIT_SECONDS="120"),
        stderr=subprocess.PIPE,
        text=True,
    )
    messages = []
    for line in process.stderr:
        messages.append(line)
        if "(attempt 2)" in line:
            late.mkdir()
    assert process.wait(timeout=120) == 0, "".join(messages)
    assert "waiting for the database (attempt 1): OperationalError" in messages[0]
    assert "(attempt 2)" in messages[1] and "database reachable; applying migrations" in messages[2]
    assert calls(tmp_path) == ["flask --app wsgi db upgrade", "served"]


def test_gives_up_when_the_database_never_comes(stub_bin, tmp_path):
    done = run_entrypoint(stub_bin, tmp_path, f"sqlite:///{tmp_path}/never/cxr.sqlite", "true", DB_WAIT_SECONDS="3")
    assert done.returncode == 1
    assert "still unreachable after 3 s; giving up" in done.stderr
    assert calls(tmp_path) == []  # neither migrated nor started


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"MAX_UPLOAD_MB": "50MB"},
            "entrypoint: configuration error: MAX_UPLOAD_MB must be a whole number, not '50MB'",
        ),
        (
            {"DB_WAIT_SECONDS": "10s"},
            "entrypoint: configuration error: DB_WAIT_SECONDS must be a whole number of seconds",
        ),
    ],
)
def test_a_bad_setting_stops_the_start_at_once_with_one_line(stub_bin, tmp_path, setting, message):
    # It used to be taken for a database that is down: a traceback per attempt for DB_WAIT_SECONDS.
    done = run_entrypoint(stub_bin, tmp_path, f"sqlite:///{tmp_path}/cxr.sqlite", "true", **setting)
    assert done.returncode == 4
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(message)
    assert calls(tmp_path) == []


def test_a_start_right_after_a_failed_one_waits_twice_as_long_each_time(stub_bin, tmp_path):
    # compose restarts a container that exits (restart: unless-stopped) and podman does so at once: a
    # bad setting restarted about 3 times a second, its line each time, for as long as nobody looked.
    started = []
    for _ in range(3):
        started.append(time.monotonic())
        done = run_entrypoint(stub_bin, tmp_path, f"sqlite:///{tmp_path}/cxr.sqlite", "true", MAX_UPLOAD_MB="50MB")
        assert done.returncode == 4
        started[-1] = (time.monotonic() - started[-1], done.stderr.splitlines())
    (first, first_lines), (second, second_lines), (third, third_lines) = started
    assert len(first_lines) == 1 and first < 5  # a fresh container: the line at once, no wait
    assert second_lines[0].endswith("waiting 1 s before this one") and second >= 1
    assert third_lines[0].endswith("waiting 2 s before this one") and third >= 2
    assert second_lines[1:] == third_lines[1:] == first_lines


def test_a_failed_migration_stops_the_start(stub_bin, tmp_path):
    done = run_entrypoint(
        stub_bin,
        tmp_path,
        f"sqlite:///{tmp_path}/cxr.sqlite",
        "sh",
        "-c",
        'echo "served" >> "$STUB_LOG"',
        FLASK_STUB_RC="1",
    )
    assert done.returncode == 1
    assert calls(tmp_path) == ["flask --app wsgi db upgrade"]  # gunicorn never started


def test_without_a_command_it_execs_gunicorn_with_the_project_config(stub_bin, tmp_path):
    gunicorn = stub_bin / "gunicorn"
    gunicorn.write_text('#!/bin/sh\necho "gunicorn $* pid=$$" >> "$STUB_LOG"\n')
    gunicorn.chmod(0o755)
    done = run_entrypoint(stub_bin, tmp_path, f"sqlite:///{tmp_path}/cxr.sqlite")
    assert done.returncode == 0, done.stderr
    assert calls(tmp_path)[1].startswith("gunicorn --config gunicorn.conf.py wsgi:app")


def test_the_database_url_is_never_printed(stub_bin, tmp_path):
    # A PostgreSQL URL on a closed port: the error is reported, the password is not.
    done = run_entrypoint(
        stub_bin, tmp_path, "postgresql://cxr:TopSecret99@127.0.0.1:9/cxr", "true", DB_WAIT_SECONDS="1"
    )
    assert done.returncode == 1 and "OperationalError" in done.stderr
    assert "TopSecret99" not in done.stderr + done.stdout


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash (the slim image's /bin/sh) not installed")
def test_script_is_posix_sh():
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["dash", "-n", str(ENTRYPOINT)]).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)


def test_sigterm_while_waiting_stops_it(stub_bin, tmp_path):
    # In a container the script is PID 1, which ignores signals it has no trap for.
    process = subprocess.Popen(
        [str(ENTRYPOINT), "true"],
        stderr=subprocess.PIPE,
        text=True,
        env=entrypoint_env(stub_bin, tmp_path, f"sqlite:///{tmp_path}/never/x.sqlite"),
    )
    assert "(attempt 1)" in process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143  # its own trap's status, not killed by the default action
    assert calls(tmp_path) == []
