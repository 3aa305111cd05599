"""A throwaway Redis server for the queue tests: Debian's redis-server on a free loopback port,
in a temporary folder, stopped at the end of the session. Skips when the binary is missing
(.ci/run installs it, so CI always runs these tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from tests.server_process import stop_server, wait_until_answering


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, *settings: str):
        """`settings`: more of redis.conf as command-line arguments (`--rename-command`, `EVALSHA`, `""`)."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not shutil.which(binary):
            pytest.skip("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
        self.folder = tempfile.mkdtemp(prefix="cxr-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", self.folder, *settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        def answers() -> None:
            redis.Redis(port=self.port, socket_timeout=1).ping()

        wait_until_answering(answers, self.process, redis.ConnectionError, self._gave_up)

    def _gave_up(self) -> RuntimeError:
        self.stop()
        return RuntimeError("redis-server did not start")

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    @contextlib.contextmanager
    def stalled(self):
        """The server stopped by SIGSTOP: its connections stay open and nothing answers (a network
        partition that drops packets, a server paused), unlike an outage, where connecting is refused."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        stop_server(self.process, self.folder)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()
