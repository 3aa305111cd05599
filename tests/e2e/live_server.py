"""The real app, served by gunicorn on a free loopback port, on a fresh migrated SQLite database.

Set up the way an operator would: `flask db upgrade` and `flask users create` from the shell, then
gunicorn with the project's gunicorn.conf.py and the shipped model. Only the production cookie
setting is relaxed, because the browser talks plain http to 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.e2e.paths import REPO

# The worker imports TensorFlow and loads the model before it answers anything: 20 s or more on a
# busy two-core machine.
READY_TIMEOUT_S = 180


@dataclass
class Account:
    username: str
    password: str
    role: str


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    accounts: dict[str, Account] = field(default_factory=dict)

    def flask(self, *args: str) -> str:
        """Run `flask --app wsgi ...` against this server's database; returns stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_account(self, username: str, role: str) -> Account:
        account = Account(username, secrets.token_urlsafe(12), role)
        self.flask(
            "users", "create", username, "--role", role, "--password", account.password, "--no-change-at-sign-in"
        )
        self.accounts[username] = account
        return account

    def api_token(self, username: str) -> str:
        return self.flask("users", "token", username).strip().splitlines()[-1]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        """Start gunicorn and return at once; `wait_until_ready` blocks until the model is loaded."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=REPO,
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self) -> None:
        self._wait_for("/readyz", READY_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # quick shutdown: nothing here needs draining
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def _wait_for(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                response = requests.get(self.url + path, timeout=timeout_s)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:500]}"
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.25)
        raise RuntimeError(f"{path} not ready after {timeout_s}s ({last}):\n{self.log_tail()}")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(instance_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MODEL_PATH", "APP_ENV"}}
    env.update(
        {
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "SESSION_COOKIE_SECURE": "false",  # plain http on loopback; everything else as deployed
            "INSTANCE_DIR": str(instance_dir),
            "DATABASE_URL": f"sqlite:///{instance_dir / 'e2e.sqlite'}",
            "BIND": f"127.0.0.1:{port}",
            # One worker: the model is loaded once, and the two CPU cores of a CI runner stay for Chromium.
            "WEB_WORKERS": "1",
            "WEB_THREADS": "4",
            "WEB_GRACEFUL_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def launch(instance_dir: Path) -> LiveServer:
    instance_dir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    server = LiveServer(
        url=f"http://127.0.0.1:{port}",
        env=server_environment(instance_dir, port),
        log_path=instance_dir / "gunicorn.log",
    )
    server.flask("db", "upgrade")
    # The worker loads the model while the accounts are created: both take seconds.
    server.start()
    try:
        server.create_account("e2e-admin", "admin")
        server.create_account("e2e-clin", "clinician")
        server.wait_until_ready()
    except BaseException:
        server.stop()
        raise
    return server
