"""Start and stop the servers under test on loopback ports, and read their workers' memory.

Our app runs exactly as `scripts/run.sh` serves it (gunicorn with gunicorn.conf.py, wsgi:app) but
on a fresh temporary instance folder: its own SQLite database, migrated, with one clinician and an
API token made through the app's own CLI (tests/live_app.py). The naive reference server runs under
gunicorn with the same workers, threads and connections per worker, so the comparison measures the
request path and not the server; so does the floor server (benchmarks/floor_server.py).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from gunicorn.config import Config as GunicornConfig

from tests.live_app import ROOT, LiveApp

BENCH_USER = "bench"


class BenchServer(LiveApp):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.token: str | None = None
        self.extra: dict = {}

    def worker_memory_mb(self) -> dict[int, dict[str, float]]:
        return {pid: mem for pid in self.worker_pids() if (mem := memory_mb(pid)) is not None}

    def stop(self, *args, **kwargs) -> None:
        super().stop(*args, **kwargs)
        self.extra["log"] = self.log_tail(200)
        self.remove()


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


def gunicorn_settings(env: dict[str, str]) -> dict:
    """workers, threads, connections per worker, keep-alive and TensorFlow threads per worker
    (INFERENCE_THREADS) as gunicorn.conf.py resolves them under `env`."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # What the file leaves unset is gunicorn's own default.
    defaults = GunicornConfig().settings
    names = ("workers", "threads", "worker_connections", "keepalive")
    resolved = {name: int(settings.get(name, defaults[name].get())) for name in names}
    return {**resolved, "inference_threads": int(settings["inference_threads"])}


def start_app(model_path: Path | None = None, settings: dict[str, str] | None = None) -> BenchServer:
    """Our app under gunicorn.conf.py on a fresh database, with `settings` added to its environment;
    returns once the process is spawned."""
    # The load generator is a runaway script by design: with rate limits on it would measure the 429s.
    env = {
        "RATE_LIMITS_ENABLED": "false",
        **({"MODEL_PATH": str(model_path)} if model_path else {}),
        **(settings or {}),
    }
    server = BenchServer("app", env=env)
    server.token = server.prepare(BENCH_USER)
    server.start()
    server.extra["gunicorn"] = gunicorn_settings(server.env)
    return server


def start_reference(name: str, settings: dict, model_path: Path, env: dict[str, str] | None = None) -> BenchServer:
    """A reference server, `benchmarks/<name>_server.py` (naive or floor), with the same workers,
    threads and connections per worker as ours."""
    server = BenchServer(name, env={"MODEL_PATH": str(model_path), **(env or {})})
    # fmt: off
    server.argv = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{server.port}",
        "--workers", str(settings["workers"]), "--threads", str(settings["threads"]),
        "--worker-class", "gthread", "--timeout", "120", "--access-logfile", "-",
        "--worker-connections", str(settings["worker_connections"]), "--keep-alive", str(settings["keepalive"]),
        f"benchmarks.{name}_server:app",
    ]
    # fmt: on
    server.start()
    server.extra["gunicorn"] = dict(settings)
    return server
