"""A throwaway nginx for the tests: Debian's nginx on a free loopback port, with its own configuration
in a temporary folder, publishing a server under a path of a shared host as a hospital's reverse proxy
does (docs/deployment.md, "Under a path"). Skips when nginx is missing (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.server_process import stop_server, wait_until_answering

# Relative paths are under the folder given with -p. The host's root is another application, which
# keeps a `session` cookie of its own at / (most Flask and Django apps do).
CONFIG = """
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log access.log;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    client_max_body_size 50m;
    server {{
        listen 127.0.0.1:{port};
        location {prefix}/ {{
            proxy_pass {upstream}/;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Prefix {prefix};
        }}
        location / {{
            add_header Set-Cookie "session=another-application; Path=/; HttpOnly" always;
            return 200 "another application";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PathProxy:
    """nginx publishing `upstream` (http://127.0.0.1:PORT) at http://127.0.0.1:OWN_PORT{prefix}/."""

    def __init__(self, upstream: str, prefix: str = "/cxr"):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(binary, os.X_OK):
            pytest.skip("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
        self.folder = Path(tempfile.mkdtemp(prefix="cxr-nginx-"))
        self.folder.chmod(0o755)  # run as root, nginx's workers are `nobody`: they write the temp folders
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.folder / "nginx.conf").write_text(CONFIG.format(port=self.port, prefix=prefix, upstream=upstream))
        self.process = subprocess.Popen(
            [binary, "-p", str(self.folder), "-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        def answers() -> None:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()

        wait_until_answering(answers, self.process, OSError, self._gave_up)

    def _gave_up(self) -> RuntimeError:
        log = (self.folder / "error.log").read_text() if (self.folder / "error.log").exists() else ""
        self.stop()
        return RuntimeError(f"nginx did not start:\n{log}")

    def stop(self) -> None:
        stop_server(self.process, self.folder)

    def __enter__(self) -> PathProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
