"""What the security measures of issue 19 cost and save, measured in one run:
`python -m benchmarks.security_costs` prints JSON (figures for docs/security.md).

1. Decoding a 6000x6000 RGBA PNG (~140 KB): peak memory and time with the decode budget lifted,
   against the refusal from the header under the default budget (each in a fresh process).
2. An API call with rate limits on (in-memory counters, limits never reached) against off, in process.
3. The token's last-used time: database writes for a burst of API calls with one token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DECODE_PROBE = """
import json, resource, sys, time
from tests.test_decode_budget import blank_rgba_png
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError
data = blank_rgba_png()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    decode(data, target_size=224, memory_mb=int(sys.argv[1]))
    outcome = "decoded"
except DecodeError as exc:
    outcome = exc.code
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"file_kb": len(data) // 1024, "outcome": outcome, "seconds": round(seconds, 3),
                  "peak_growth_mb": round((peak - before) / 1024, 1)}))
"""


def decode_costs() -> dict:
    runs = {}
    for label, budget in (("budget_lifted", 100_000), ("default_budget", 0)):
        done = subprocess.run(
            [sys.executable, "-c", DECODE_PROBE, str(budget)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


def _app(enabled: bool, workdir: Path):
    from tests.helpers import make_user, reset_database
    from webapp import create_app
    from webapp.config import TestingConfig

    settings = {"INSTANCE_DIR": workdir, "RATE_LIMITS_ENABLED": enabled, "API_RATE_LIMIT": "100000/second"}
    app = create_app(TestingConfig, settings)
    with app.app_context():
        reset_database()
    make_user(app, "clin", "clinician")
    return app


def api_call_costs(rounds: int = 4, calls: int = 200) -> dict:
    """Alternating rounds (off, on, off, on ...) so drift on a shared machine hits both alike;
    the medians are compared. One app at a time: the limiter is one object per process."""
    from statistics import median

    from sqlalchemy import event

    from tests.helpers import issue_token
    from webapp.extensions import db

    times: dict[str, list[float]] = {"limits_off": [], "limits_on": []}
    writes: list[str] = []

    def count_token_writes(_conn, _cursor, statement, *_args) -> None:
        if statement.startswith("UPDATE api_tokens"):
            writes.append(statement)

    for _ in range(rounds):
        for label, enabled in (("limits_off", False), ("limits_on", True)):
            with tempfile.TemporaryDirectory() as workdir:
                app = _app(enabled, Path(workdir))
                headers = {"Authorization": f"Bearer {issue_token(app, 'clin')}"}
                client = app.test_client()
                with app.app_context():
                    event.listen(db.engine, "before_cursor_execute", count_token_writes)
                for _ in range(20):  # warm-up
                    client.get("/api/v1/tokens", headers=headers)
                started = time.perf_counter()
                for _ in range(calls):
                    assert client.get("/api/v1/tokens", headers=headers).status_code == 200
                times[label].append((time.perf_counter() - started) * 1000 / calls)
                with app.app_context():
                    event.remove(db.engine, "before_cursor_execute", count_token_writes)
                    db.engine.dispose()
    off, on = median(times["limits_off"]), median(times["limits_on"])
    return {
        "ms_per_call_median": {"limits_off": round(off, 3), "limits_on": round(on, 3)},
        "on_over_off": round(on / off, 3),
        "token_last_used_writes": len(writes),
        "api_calls_made": 2 * rounds * (calls + 20),
    }


def main() -> None:
    print(json.dumps({"decode": decode_costs(), "api_calls": api_call_costs()}, indent=2))


if __name__ == "__main__":
    main()
