"""One deployment's three processes on a shared instance folder: the web app (gunicorn), the DICOM
node (`flask dicom listen`) and the queue worker (`flask jobs worker`), as docs/dicom.md runs them.
Used by scripts/check_dicom_node.py and benchmarks/queue_bench.py."""

from __future__ import annotations

import sqlite3
import sys

from tests.live_app import LiveApp

FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]


class NodeProcesses:
    """Web app, listener and worker sharing one instance folder and one secret key; the web app's
    database is migrated and has a clinician `clin` whose API token is `token`."""

    def __init__(self, env: dict[str, str], worker_threads: int = 1, name: str = "dicom-web"):
        self.env = env
        self.web = LiveApp(name, env=env)
        self.token = self.web.prepare("clin")
        self.worker_argv = [*FLASK, "jobs", "worker", "--threads", str(worker_threads)]
        self.listener = self._process("listener", [*FLASK, "dicom", "listen"])
        self.worker = self._process("worker", self.worker_argv)
        self.workers_started = 1

    def _process(self, name: str, argv: list[str]) -> LiveApp:
        process = LiveApp(name, instance_dir=self.web.instance, env=self.env, argv=argv)
        process.env["SECRET_KEY"] = self.web.env["SECRET_KEY"]  # one key: the same keyed hashes everywhere
        return process

    def start(self) -> None:
        for process in (self.web, self.listener, self.worker):
            process.start()
        self.web.wait_ready()
        self.listener.wait_for_log("dicom node listening", 1, 60)
        self.worker.wait_for_log("jobs worker ready", 1, 180)

    def new_worker(self) -> None:
        """Start another worker (the one before is expected to be dead)."""
        self.workers_started += 1
        self.worker = self._process(f"worker{self.workers_started}", self.worker_argv)
        self.worker.start()
        self.worker.wait_for_log("jobs worker ready", 1, 180)

    def stop(self) -> None:
        for process in (self.worker, self.listener, self.web):
            process.stop()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.web.database, timeout=30)
