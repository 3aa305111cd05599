"""Measure sign-in time for known and unknown user names with the real Argon2 settings.

The app runs in-process on an in-memory database with production-strength hashing; tries for a known
name (wrong password), an unknown name and a known name with the right password are interleaved so
that machine load falls on all alike. Prints the means and their ratio (the figure in docs/sign-in.md):

    .venv/bin/python scripts/measure_sign_in.py [--tries 20]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.config import TestingConfig  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import User  # noqa: E402

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
PASSWORD = "measured-password-1"


def sign_in_ms(app, username: str, password: str) -> float:
    client = app.test_client()
    token = CSRF.search(client.get("/auth/login").get_data(as_text=True)).group(1)
    start = time.perf_counter()
    client.post("/auth/login", data={"username": username, "password": password, "csrf_token": token})
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the per-request log lines would drown the figures
    with TemporaryDirectory() as instance:
        app = create_app(
            TestingConfig,
            {
                "INSTANCE_DIR": Path(instance),
                "ARGON2_FAST": False,  # the production hasher
                # Measuring sign-in, not throttling: no delays for these repeated failures.
                "LOGIN_MAX_FAILURES_PER_ACCOUNT": 10_000,
                "LOGIN_MAX_FAILURES_PER_ADDRESS": 10_000,
                "SIGN_IN_RATE_LIMIT": "10000/minute",
            },
        )
        with app.app_context():
            upgrade()
            user = User(username="known.user", role="clinician")
            user.set_password(PASSWORD)
            db.session.add(user)
            db.session.commit()
            print(f"hash parameters: {user.password_hash.split('$')[3]}")
        cases = {
            "known name, wrong password": ("known.user", "not-the-password"),
            "unknown name": ("nobody.here", "not-the-password"),
            "known name, right password": ("known.user", PASSWORD),
        }
        times = {name: [] for name in cases}
        sign_in_ms(app, "warm.up", "not-the-password")
        for _ in range(args.tries):
            for name, (username, password) in cases.items():
                times[name].append(sign_in_ms(app, username, password))
    for name, values in times.items():
        print(f"{name:28s} mean {statistics.mean(values):7.1f} ms  median {statistics.median(values):7.1f} ms")
    known = statistics.mean(times["known name, wrong password"])
    unknown = statistics.mean(times["unknown name"])
    print(f"ratio known/unknown (means, {args.tries} tries each): {known / unknown:.2f}")


if __name__ == "__main__":
    main()
