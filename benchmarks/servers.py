"""Start and stop the servers under test on loopback ports, and read their workers' memory.

Our app runs exactly as `scripts/run.sh` serves it (gunicorn with gunicorn.conf.py, wsgi:app) but
on a fresh temporary instance folder: its own SQLite database, migrated, with one clinician and an
API token made through the app's own CLI. The naive reference server runs under gunicorn with the
same worker and thread counts, so the comparison measures the request path and not the server.
"""

from __future__ import annotations

import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .client import get_status

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
BENCH_USER = "bench"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    started: float
    ready_s: float | None = None
    token: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.workdir / "cxr.sqlite"

    def wait_ready(self, path: str = "/readyz") -> float:
        """Seconds from process start to the first 200 on `path`."""
        deadline = self.started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if get_status(self.port, path, timeout=READY_TIMEOUT_S) == 200:
                self.ready_s = time.perf_counter() - self.started
                return self.ready_s
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return sorted(int(pid) for pid in children.read_text().split())
        except OSError:
            return []

    def worker_memory_mb(self) -> dict[int, dict[str, float]]:
        return {pid: mem for pid in self.worker_pids() if (mem := memory_mb(pid)) is not None}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown of the workers
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self.extra["log"] = self.log_tail(200)
        shutil.rmtree(self.workdir, ignore_errors=True)


def memory_mb(pid: int) -> dict[str, float] | None:
    """rss (what `ps` shows), pss (shared pages split between the processes that map them) and
    uss (pages only this process holds) of one process, in MB."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                fields[key] = int(value.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    if "Rss" not in fields:
        return None
    return {
        "rss": fields["Rss"],
        "pss": fields.get("Pss", 0.0),
        "uss": fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0),
    }


def _base_env(workdir: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    # Never touch a database the caller may have configured: the benchmark owns its own.
    env.pop("DATABASE_URL", None)
    env.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_hex(32),
        INSTANCE_DIR=str(workdir),
        BIND=f"127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
        # The load generator is a runaway script by design: rate limits would measure themselves.
        RATE_LIMITS_ENABLED="false",
    )
    return env


def _flask(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def gunicorn_settings(env: dict[str, str]) -> dict:
    """workers and threads as gunicorn.conf.py resolves them under `env`."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"workers": int(settings.get("workers", 1)), "threads": int(settings.get("threads", 1))}


def _spawn(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> Server:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115  handed to the child, closed with it
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return Server(name, port, process, workdir, log_path, started)


def start_app(model_path: Path | None = None) -> Server:
    """Our app under gunicorn.conf.py on a fresh database; returns once the process is spawned."""
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-app-"))
    port = free_port()
    env = _base_env(workdir, port)
    if model_path:
        env["MODEL_PATH"] = str(model_path)
    _flask(env, "db", "upgrade")
    _flask(env, "users", "create", BENCH_USER, "--role", "clinician", "--password", secrets.token_urlsafe(16))
    token = _flask(env, "users", "token", BENCH_USER).strip().splitlines()[-1]
    server = _spawn("app", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], env, workdir, port)
    server.token = token
    server.extra["gunicorn"] = gunicorn_settings(env)
    return server


def start_naive(settings: dict, model_path: Path) -> Server:
    """The reference server with the same worker/thread counts as ours."""
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-naive-"))
    port = free_port()
    env = _base_env(workdir, port)
    env["MODEL_PATH"] = str(model_path)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(settings["workers"]),
        "--threads",
        str(settings["threads"]),
        "--worker-class",
        "gthread",
        "--timeout",
        "120",
        "--access-logfile",
        "-",
        "benchmarks.naive_server:app",
    ]
    server = _spawn("naive", argv, env, workdir, port)
    server.extra["gunicorn"] = dict(settings)
    return server
