"""The real app under gunicorn on a free loopback port, in a throwaway instance folder.

One harness for everything that needs a running server: the browser journeys (tests/e2e), the
named checks in scripts/ and the benchmarks. The app is set up the way an operator would: the
migrations and accounts through `flask --app wsgi ...`, then gunicorn with the project's
gunicorn.conf.py and `wsgi:app`, in production mode with its own SQLite database.
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
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
# A worker imports TensorFlow and loads the model before it answers: 20 s or more on a busy 2-core machine.
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 30.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class LiveApp:
    """A server process on 127.0.0.1; by default the app itself, else any `argv` (a reference server)."""

    def __init__(
        self,
        name: str = "app",
        *,
        instance_dir: Path | None = None,
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
    ):
        self.name = name
        self.instance = Path(instance_dir or tempfile.mkdtemp(prefix=f"cxr-{name}-"))
        self.instance.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.instance / f"{name}.log"
        self.database = self.instance / "cxr.sqlite"
        self.argv = argv or GUNICORN
        # Never a database the caller configured: the server owns its own.
        self.env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MODEL_PATH", "APP_ENV"}}
        self.env.update(
            APP_ENV="production",
            SECRET_KEY=secrets.token_hex(32),
            INSTANCE_DIR=str(self.instance),
            BIND=f"127.0.0.1:{self.port}",
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.ready_s: float | None = None

    # ------------------------------------------------------------ set-up through the app's CLI
    def flask(self, *args: str) -> str:
        """Run `flask --app wsgi ...` against this server's database; returns stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
        return done.stdout

    def migrate(self) -> None:
        self.flask("db", "upgrade")

    def create_user(self, username: str, role: str = "clinician", password: str | None = None) -> str:
        """Create an account; returns its password."""
        password = password or secrets.token_urlsafe(16)
        # Accounts for scripted checks: nobody is there to choose a new password at first sign-in.
        self.flask("users", "create", username, "--role", role, "--password", password, "--no-change-at-sign-in")
        return password

    def api_token(self, username: str) -> str:
        return self.flask("users", "token", username).strip().splitlines()[-1]

    def prepare(self, username: str, role: str = "clinician") -> str:
        """Migrate the empty database and create one account; returns its API token."""
        self.migrate()
        self.create_user(username, role)
        return self.api_token(username)

    # ------------------------------------------------------------ the process
    def start(self) -> None:
        """Start the server and return at once; `wait_ready` blocks until it answers."""
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.started = time.perf_counter()
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/readyz", timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from process start to the first 200 on `path`."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if http_status(self.url + path, timeout=timeout) == 200:
                self.ready_s = time.perf_counter() - self.started
                return self.ready_s
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: {path} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """The master's live child processes (gunicorn workers), from /proc; zombies excluded."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no server log)"

    def log_count(self, needle: str) -> int:
        return self.log_text().count(needle)

    def wait_for_log(self, needle: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.log_count(needle) < count:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail(80)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} x {needle!r} not logged within {timeout:.0f} s:\n{self.log_tail(80)}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> None:
        """SIGTERM: gunicorn's graceful shutdown; SIGINT: its quick one."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        shutil.rmtree(self.instance, ignore_errors=True)

    def __enter__(self) -> LiveApp:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if exc_type is None:
            self.remove()
        else:
            print(f"{self.name}: log and database kept in {self.instance}", file=sys.stderr)
