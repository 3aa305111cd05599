"""A throwaway pgbouncer in front of the test PostgreSQL server (TEST_DATABASE_URL, scripts/with_postgres.sh),
as hospitals run one: Debian's pgbouncer on a free loopback port, in a temporary folder. Skips when the
binary is missing (.ci/run installs it, so CI always runs these tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from tests.redis_server import free_port
from tests.server_process import stop_server, wait_until_answering


class PgBouncer:
    def __init__(self, server_url: str, pool_mode: str):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not shutil.which(binary):
            pytest.skip("pgbouncer is not installed (apt-get install pgbouncer); .ci/run installs it")
        server = make_url(server_url)
        self.folder = Path(tempfile.mkdtemp(prefix="cxr-pgbouncer-"))
        self.port = free_port()
        self.url = server.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        lines = [
            "[databases]",
            f"* = host={server.host} port={server.port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {self.folder / 'userlist.txt'}",
            f"pool_mode = {pool_mode}",
            "default_pool_size = 2",  # few server connections, shared by every client, as in a busy pool
        ]
        (self.folder / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.folder / "userlist.txt").write_text(f'"{server.username}" "{server.password}"\n')
        command = [binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            for path in (self.folder, *self.folder.iterdir()):
                shutil.chown(path, "nobody")
            command[1:1] = ["-u", "nobody"]
        self.log = open(self.folder / "pgbouncer.log", "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        def answers() -> None:
            psycopg.connect(self.url.replace("+psycopg", ""), connect_timeout=2).close()

        wait_until_answering(answers, self.process, psycopg.OperationalError, self._gave_up)

    def _gave_up(self) -> RuntimeError:
        log = (self.folder / "pgbouncer.log").read_text()
        self.stop()
        return RuntimeError(f"pgbouncer did not start: {log[-2000:]}")

    def stop(self) -> None:
        stop_server(self.process, self.folder)
        self.log.close()
