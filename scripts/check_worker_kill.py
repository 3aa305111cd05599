"""Kill a gunicorn worker with SIGKILL in the middle of a steady stream of uploads, and show that

  * only the requests in flight at that moment are lost (sent before the worker had died, not
    answered before the kill),
  * the service answers again within 10 s (the surviving worker keeps serving; the arbiter
    forks a replacement that loads the model before it takes traffic),
  * the database holds exactly one prediction row per successful (201) answer, and no other row
    except, at most, one for a lost in-flight request that the worker had committed before it
    died (the kill can land between the commit and the reply: the analysis ran and is logged, but
    its answer never left the server). Each upload carries its own file name, so every row is
    matched to the request that made it.

    .venv/bin/python scripts/check_worker_kill.py            # prints a report; exit 1 on failure

The server is the real app with the shipped model, under gunicorn.conf.py, 2 workers, on a
loopback port with a throwaway SQLite database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.live_app import ROOT, LiveApp  # noqa: E402  (needs the repository on sys.path)

IMAGES = [ROOT / "tests" / "fixtures" / "images" / name for name in ("normal.jpeg", "pneumonia.jpeg")]
RECOVERY_LIMIT_S = 10.0
READY_LINE = "worker ready"


@dataclass
class Outcome:
    filename: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all (connection reset, timeout)
    error: str = ""
    prediction_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 201


def client(url: str, token: str, stop: threading.Event, outcomes: list[Outcome], index: int) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    payloads = [(path.stem, path.read_bytes()) for path in IMAGES]
    n = 0
    while not stop.is_set():
        stem, data = payloads[(index + n) % len(payloads)]
        name = f"{stem}-client{index}-{n}.jpeg"
        n += 1
        started = time.monotonic()
        try:
            response = session.post(f"{url}/api/v1/predictions", files={"file": (name, data, "image/jpeg")}, timeout=60)
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            ids = [item.get("id") for item in body.get("predictions", [])]
            outcomes.append(
                Outcome(
                    name,
                    started,
                    time.monotonic(),
                    response.status_code,
                    "" if response.status_code == 201 else response.text[:200],
                    ids[0] if response.status_code == 201 and ids else None,
                )
            )
        except requests.RequestException as exc:
            outcomes.append(Outcome(name, started, time.monotonic(), None, type(exc).__name__))
            session = requests.Session()  # start over on a fresh connection, as a real client would
            session.headers["Authorization"] = f"Bearer {token}"


def database_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT id, filename FROM predictions"))


def wait_until_dead(pid: int, timeout: float = 10.0) -> float:
    """The moment the worker had really died, on the monotonic clock.

    os.kill() returns before a SIGKILL is delivered, and a request sent in that gap still reaches
    the dying worker (on its keep-alive connection): it was in flight at the kill as much as one
    sent a moment earlier. The worker has died once its process is a zombie with no thread left
    besides the leader (its sockets are closed by then), or once the arbiter has reaped it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            threads = len(os.listdir(f"/proc/{pid}/task"))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return time.monotonic()
        if state in ("Z", "X") and threads <= 1:
            return time.monotonic()
        time.sleep(0.0002)
    raise TimeoutError(f"worker {pid} still alive {timeout} s after SIGKILL")


def run(clients: int, warmup: float, after: float) -> dict:
    # A stream of uploads from one token on purpose; rate limits are tested in tests/test_rate_limits.py.
    # Rows are matched to requests by the name each upload sent, so names are stored as sent.
    env = {"WEB_WORKERS": "2", "RATE_LIMITS_ENABLED": "false", "STORE_ORIGINAL_FILENAMES": "true"}
    with LiveApp(env=env) as server:
        token = server.prepare("worker-kill-check")
        server.start()
        server.wait_for_log(READY_LINE, 2, timeout=240)
        original = server.worker_pids()

        stop = threading.Event()
        outcomes: list[Outcome] = []
        threads = [
            threading.Thread(target=client, args=(server.url, token, stop, outcomes, i), daemon=True)
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(warmup)

        victim = original[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        dead_at = wait_until_dead(victim)
        # Keep the stream going until the replacement worker has loaded the model, and a bit more.
        try:
            server.wait_for_log(READY_LINE, 3, timeout=240)
            replacement_ready_s = time.monotonic() - killed_at
        except TimeoutError:
            replacement_ready_s = None
        time.sleep(after)
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        workers_after = server.worker_pids()
        rows = database_rows(server.database)

    successes = [o for o in outcomes if o.ok]
    lost = [o for o in outcomes if not o.ok]

    def was_in_flight(o: Outcome) -> bool:
        return o.started <= dead_at and o.ended >= killed_at

    in_flight = [o for o in outcomes if was_in_flight(o)]
    lost_not_in_flight = [o for o in lost if not was_in_flight(o)]
    first_answer_after_kill = min((o.ended for o in successes if o.started >= dead_at), default=None)
    recovery_s = None if first_answer_after_kill is None else first_answer_after_kill - killed_at
    after_kill = sorted(o.ended for o in successes if o.ended >= killed_at)
    longest_gap_s = max((b - a for a, b in zip([killed_at, *after_kill], after_kill)), default=None)

    rows_by_name: dict[str, list[int]] = {}
    for row_id, filename in rows:
        rows_by_name.setdefault(filename, []).append(row_id)
    answered_rows_ok = all(rows_by_name.get(o.filename) == [o.prediction_id] for o in successes)
    one_row_each = all(len(ids) == 1 for ids in rows_by_name.values())
    logged_not_delivered = [o for o in lost if o.filename in rows_by_name]
    explained = {o.filename for o in successes} | {o.filename for o in lost if was_in_flight(o)}
    stray_rows = [name for name in rows_by_name if name not in explained]

    report = {
        "clients": clients,
        "requests": len(outcomes),
        "answered_201": len(successes),
        "in_flight_at_kill": len(in_flight),
        "kill_to_death_ms": round((dead_at - killed_at) * 1000.0, 2),
        "lost": len(lost),
        "lost_detail": sorted({f"{o.status}: {o.error}" for o in lost}),
        "lost_sent_ms_after_kill": sorted(round((o.started - killed_at) * 1000.0, 1) for o in lost),
        "lost_not_in_flight_at_kill": len(lost_not_in_flight),
        "first_answer_after_kill_s": None if recovery_s is None else round(recovery_s, 3),
        "longest_gap_between_answers_after_kill_s": None if longest_gap_s is None else round(longest_gap_s, 3),
        "replacement_worker_ready_s": None if replacement_ready_s is None else round(replacement_ready_s, 1),
        "workers_before": original,
        "workers_after": workers_after,
        "database_rows": len(rows),
        "rows_for_201_answers_ok": answered_rows_ok,
        "rows_for_lost_in_flight_requests": len(logged_not_delivered),
        "rows_matching_no_request": len(stray_rows),
    }
    report["checks"] = {
        "only in-flight requests lost": not lost_not_in_flight,
        f"answers again within {RECOVERY_LIMIT_S:.0f} s": recovery_s is not None and recovery_s <= RECOVERY_LIMIT_S,
        "one row per 201 answer; no other row but a lost in-flight one": (
            answered_rows_ok and one_row_each and not stray_rows
        ),
        "killed worker replaced": len(workers_after) == 2 and victim not in workers_after,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client threads uploading without pause")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before the kill")
    parser.add_argument(
        "--after", type=float, default=3.0, help="seconds of traffic after the replacement worker is ready"
    )
    args = parser.parse_args()
    report = run(args.clients, args.warmup, args.after)
    print(json.dumps(report, indent=2))
    failed = [name for name, passed in report["checks"].items() if not passed]
    if failed:
        sys.exit("worker-kill check FAILED: " + "; ".join(failed))
    print(
        f"worker-kill check passed: {report['answered_201']} answered, {report['lost']} lost "
        f"(all in flight at the kill), service answered again after {report['first_answer_after_kill_s']} s, "
        f"{report['database_rows']} rows for {report['answered_201']} answers "
        f"(+{report['rows_for_lost_in_flight_requests']} logged but not delivered)"
    )


if __name__ == "__main__":
    main()
