"""The app for the browser journeys: tests/live_app.py's server with two accounts and plain-http cookies.

Only the production cookie setting is relaxed, because the browser talks plain http to 127.0.0.1.
"""

from __future__ import annotations

import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.live_app import LiveApp


@dataclass
class Account:
    username: str
    password: str
    role: str


class LiveServer(LiveApp):
    def __init__(self, instance_dir: Path):
        super().__init__(
            "e2e",
            instance_dir=instance_dir,
            env={
                "SESSION_COOKIE_SECURE": "false",  # plain http on loopback; everything else as deployed
                # Behind one proxy, as the HTTPS stack runs it: test_under_a_path.py puts nginx in front. The
                # other journeys talk to gunicorn directly and send no X-Forwarded-* header, so nothing changes there.
                "TRUSTED_PROXIES": "1",
                # One worker: the model is loaded once, and the two CPU cores of a CI runner stay for Chromium.
                "WEB_WORKERS": "1",
                "WEB_THREADS": "4",
                "WEB_GRACEFUL_TIMEOUT": "5",
                # The journeys find films by the names they were sent with (results, history, reading
                # view), so they run with names kept; the neutral default is tested in process
                # (tests/test_filename_privacy.py, tests/test_screening.py).
                "STORE_ORIGINAL_FILENAMES": "true",
            },
        )
        self.accounts: dict[str, Account] = {}

    def create_account(self, username: str, role: str) -> Account:
        account = Account(username, self.create_user(username, role, secrets.token_urlsafe(12)), role)
        self.accounts[username] = account
        return account

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        super().stop(sig, timeout)  # quick shutdown: nothing here needs draining


def launch(instance_dir: Path) -> LiveServer:
    server = LiveServer(instance_dir)
    server.migrate()
    # The worker loads the model while the accounts are created: both take seconds.
    server.start()
    try:
        server.create_account("e2e-admin", "admin")
        server.create_account("e2e-clin", "clinician")
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
