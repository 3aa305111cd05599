"""Start the real app under gunicorn.conf.py on a loopback port, in a throwaway instance folder.

Used by the named checks in scripts/ (check_worker_kill.py, check_broken_model.py). The server
runs in production mode exactly as deployed, with its own SQLite database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a separate process: importing the app here would read the environment too early.
SETUP_SCRIPT = """
import sys
from flask_migrate import upgrade
from wsgi import app
from webapp.extensions import db
from webapp.models import ApiToken, User

with app.app_context():
    upgrade()
    user = User(username=sys.argv[1], role="clinician")
    user.set_password(sys.argv[2])
    db.session.add(user)
    token = ApiToken.issue(user)
    db.session.commit()
    print(token)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    def __init__(self, workers: int = 2, extra_env: dict[str, str] | None = None):
        self.instance = Path(tempfile.mkdtemp(prefix="cxr-check-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.instance / "server.log"
        self.env = {
            **os.environ,
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "INSTANCE_DIR": str(self.instance),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_WORKERS": str(workers),
            # The checks send streams of uploads on purpose; rate limits are tested elsewhere.
            "RATE_LIMITS_ENABLED": "false",
            **(extra_env or {}),
        }
        self.env.pop("DATABASE_URL", None)  # always the throwaway SQLite database
        self.database = self.instance / "cxr.sqlite"
        self.process: subprocess.Popen | None = None

    def prepare_database(self, username: str) -> str:
        """Migrate this server's empty database and create a clinician; returns an API token."""
        done = subprocess.run(
            [sys.executable, "-c", SETUP_SCRIPT, username, secrets.token_hex(16)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(f"database set-up failed:\n{done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        self.log_file = open(self.log_path, "w")  # noqa: SIM115  (closed in stop(), after the server)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_count(self, needle: str) -> int:
        return self.log_text().count(needle)

    def wait_for_log(self, needle: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.log_count(needle) < count:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{count} x {needle!r} not logged within {timeout:.0f} s:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """The master's live child processes (gunicorn workers), from /proc."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def __enter__(self) -> GunicornServer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if exc_type is None:
            shutil.rmtree(self.instance, ignore_errors=True)
        else:
            print(f"server log and database kept in {self.instance}", file=sys.stderr)
