"""Kill a gunicorn worker with SIGKILL in the middle of a steady stream of uploads, and show that

  * only the requests in flight at that moment are lost,
  * the service answers again within 10 s (the surviving worker keeps serving; the arbiter
    forks a replacement that loads the model before it takes traffic),
  * the database holds exactly one prediction row per successful (201) answer.

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

from gunicorn_harness import ROOT, GunicornServer

IMAGES = [ROOT / "tests" / "fixtures" / "images" / name for name in ("normal.jpeg", "pneumonia.jpeg")]
RECOVERY_LIMIT_S = 10.0
READY_LINE = "worker ready"


@dataclass
class Outcome:
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
    payloads = [(path.name, path.read_bytes()) for path in IMAGES]
    n = index
    while not stop.is_set():
        name, data = payloads[n % len(payloads)]
        n += 1
        started = time.monotonic()
        try:
            response = session.post(f"{url}/api/v1/predictions", files={"file": (name, data, "image/jpeg")},
                                    timeout=60)
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            ids = [item.get("id") for item in body.get("predictions", [])]
            outcomes.append(Outcome(started, time.monotonic(), response.status_code,
                                    "" if response.status_code == 201 else response.text[:200],
                                    ids[0] if response.status_code == 201 and ids else None))
        except requests.RequestException as exc:
            outcomes.append(Outcome(started, time.monotonic(), None, type(exc).__name__))
            session = requests.Session()  # start over on a fresh connection, as a real client would
            session.headers["Authorization"] = f"Bearer {token}"


def database_ids(path: Path) -> list[int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM predictions")]


def run(clients: int, warmup: float, after: float) -> dict:
    with GunicornServer(workers=2) as server:
        token = server.prepare_database("worker-kill-check")
        server.start()
        server.wait_for_log(READY_LINE, 2, timeout=240)
        original = server.worker_pids()

        stop = threading.Event()
        outcomes: list[Outcome] = []
        threads = [threading.Thread(target=client, args=(server.url, token, stop, outcomes, i), daemon=True)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(warmup)

        victim = original[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
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
        rows = database_ids(server.database)

    successes = [o for o in outcomes if o.ok]
    lost = [o for o in outcomes if not o.ok]
    in_flight_at_kill = [o for o in outcomes if o.started <= killed_at <= o.ended]
    lost_not_in_flight = [o for o in lost if not (o.started <= killed_at <= o.ended)]
    first_answer_after_kill = min((o.ended for o in successes if o.started >= killed_at), default=None)
    recovery_s = None if first_answer_after_kill is None else first_answer_after_kill - killed_at
    answered_ids = sorted(o.prediction_id for o in successes)
    after_kill = sorted(o.ended for o in successes if o.ended >= killed_at)
    longest_gap_s = max((b - a for a, b in zip([killed_at, *after_kill], after_kill)), default=None)

    report = {
        "clients": clients,
        "requests": len(outcomes),
        "answered_201": len(successes),
        "in_flight_at_kill": len(in_flight_at_kill),
        "lost": len(lost),
        "lost_detail": sorted({f"{o.status}: {o.error}" for o in lost}),
        "lost_not_in_flight_at_kill": len(lost_not_in_flight),
        "first_answer_after_kill_s": None if recovery_s is None else round(recovery_s, 3),
        "longest_gap_between_answers_after_kill_s": None if longest_gap_s is None else round(longest_gap_s, 3),
        "replacement_worker_ready_s": None if replacement_ready_s is None else round(replacement_ready_s, 1),
        "workers_before": original,
        "workers_after": workers_after,
        "database_rows": len(rows),
        "rows_match_answers": sorted(rows) == answered_ids,
    }
    report["checks"] = {
        "only in-flight requests lost": not lost_not_in_flight,
        f"answers again within {RECOVERY_LIMIT_S:.0f} s": recovery_s is not None and recovery_s <= RECOVERY_LIMIT_S,
        "one row per 201 answer, no others": report["rows_match_answers"],
        "killed worker replaced": len(workers_after) == 2 and victim not in workers_after,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client threads uploading without pause")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before the kill")
    parser.add_argument("--after", type=float, default=3.0,
                        help="seconds of traffic after the replacement worker is ready")
    args = parser.parse_args()
    report = run(args.clients, args.warmup, args.after)
    print(json.dumps(report, indent=2))
    failed = [name for name, passed in report["checks"].items() if not passed]
    if failed:
        sys.exit("worker-kill check FAILED: " + "; ".join(failed))
    print(f"worker-kill check passed: {report['answered_201']} answered, {report['lost']} lost "
          f"(all in flight at the kill), service answered again after {report['first_answer_after_kill_s']} s, "
          f"{report['database_rows']} rows for {report['answered_201']} answers")


if __name__ == "__main__":
    main()
