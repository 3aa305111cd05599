"""Validation runs end to end on the real app: gunicorn and a job worker on loopback, the shipped model.

  1. the 624 official test films uploaded as one ZIP (NORMAL/ and PNEUMONIA/ folders) through
     POST /api/v1/validation-runs: the run finishes within the time limit, and its AUC,
     sensitivity, specificity and UNKNOWN rate equal (within 0.005) those computed here, with
     this script's own code, from the same films' POST /api/v1/predictions answers;
  2. the same ZIP again, the worker SIGKILLed mid-run and a new one started: the run completes
     with n = 624, every film processed exactly once (one row per film, none left pending), and
     the same figures as the undisturbed run;
  3. a site threshold adopted from run 1: predictions carry it within OPERATING_POINT_SECONDS
     (at once in the worker that adopted it; the other keeps the old one up to that long, by
     design: docs/validation.md); withdrawn: they carry the model card's threshold again within
     the same time;
  4. bad archives (not a ZIP, empty, unlabelled, unknown label folder, path traversal, zip
     bomb, nested archive, too many files, bad labels.csv): each a 4xx, no run created, nothing
     left in the instance folder.

    .venv/bin/python scripts/check_validation_run.py            # prints a JSON report; exit 1 on failure

Only for this measurement the official test films are read (../shared/data/chest_xray/test,
or CHEST_XRAY_TEST).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.live_app import ROOT, LiveApp  # noqa: E402  (needs the repository on sys.path)
from webapp.site_threshold import OPERATING_POINT_SECONDS  # noqa: E402

TEST_DIR = Path(os.environ.get("CHEST_XRAY_TEST", ROOT.parent / "shared" / "data" / "chest_xray" / "test"))
TIME_LIMIT_S = 120.0
TOLERANCE = 0.005
API_BATCH = 20  # MAX_FILES_PER_UPLOAD
KILL_AFTER_FILMS = 200
WORKER = [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"]
WORKER_READY = "jobs worker ready"


def start_worker(server: LiveApp, name: str) -> LiveApp:
    """`flask --app wsgi jobs worker` on the server's instance folder and database; ready when it says so."""
    worker = LiveApp(name, instance_dir=server.instance, argv=WORKER)
    worker.start()
    worker.wait_for_log(WORKER_READY, 1, timeout=180)
    return worker


def test_films() -> list[tuple[str, str, bytes]]:
    films = []
    for truth in ("NORMAL", "PNEUMONIA"):
        for path in sorted((TEST_DIR / truth).iterdir()):
            if path.is_file():
                films.append((truth, path.name, path.read_bytes()))
    return films


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def figures(truths: list[bool], scores: list[float], labels: list[str]) -> dict:
    """This script's own computation: AUC by pairwise comparison, rates over answered films."""
    truth, score = np.array(truths), np.array(scores)
    pos, neg = score[truth], score[~truth]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    answered = [(t, label) for t, label in zip(truths, labels, strict=True) if label != "UNKNOWN"]
    tp = sum(t and label == "PNEUMONIA" for t, label in answered)
    tn = sum((not t) and label == "NORMAL" for t, label in answered)
    return {
        "n": len(truths),
        "auc": float(greater / (pos.size * neg.size)),
        "sensitivity": tp / sum(t for t, _ in answered),
        "specificity": tn / sum(not t for t, _ in answered),
        "unknown_rate": 1 - len(answered) / len(truths),
    }


def wait_done(session, url: str, run_id: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = session.get(f"{url}/api/v1/validation-runs/{run_id}", timeout=30).json()
        if body["status"] in ("done", "failed"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} not done within {timeout:.0f} s: {body}")
        time.sleep(0.5)


def upload_run(session, url: str, archive: bytes) -> int:
    response = session.post(f"{url}/api/v1/validation-runs", files={"archive": ("test.zip", archive)}, timeout=120)
    if response.status_code != 202:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"]


def predictions_figures(session, url: str, films) -> dict:
    truths, scores, labels = [], [], []
    for start in range(0, len(films), API_BATCH):
        batch = films[start : start + API_BATCH]
        response = session.post(
            f"{url}/api/v1/predictions", files=[("file", (name, data)) for _, name, data in batch], timeout=120
        )
        items = response.json()["predictions"]
        for (truth, _, _), item in zip(batch, items, strict=True):
            truths.append(truth == "PNEUMONIA")
            scores.append(item["probabilities"]["PNEUMONIA"])
            labels.append(item["label"])
    return figures(truths, scores, labels)


def bad_archives(max_files: int) -> dict[str, bytes]:
    film = (TEST_DIR / "NORMAL").iterdir().__next__().read_bytes()
    bomb = zip_of({"NORMAL/bomb.png": b"\0" * (64 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
    return {
        "not_a_zip": film,
        "empty_zip": zip_of({}),
        "no_labels": zip_of({"films/a.jpeg": film}),
        "unknown_label_folder": zip_of({"NORMAL/a.jpeg": film, "COVID/b.jpeg": film}),
        "path_traversal": zip_of({"NORMAL/../../evil.jpeg": film}),
        "zip_bomb": bomb,
        "nested_archive": zip_of({"NORMAL/a.jpeg": film, "NORMAL/more.zip": zip_of({"x.jpeg": film})}),
        "too_many_files": zip_of({f"NORMAL/{i}.jpeg": b"x" for i in range(max_files + 1)}),
        "bad_labels_csv": zip_of({"labels.csv": b"file,label\na.jpeg,COVID\n", "a.jpeg": film}),
    }


def run_check() -> dict:
    films = test_films()
    archive = zip_of({f"test/{truth}/{name}": data for truth, name, data in films})
    max_files = 5000
    report: dict = {"films": len(films), "archive_mb": round(len(archive) / 1e6, 1)}
    with LiveApp("validation", env={"WEB_WORKERS": "2", "VALIDATION_MAX_FILES": str(max_files)}) as server:
        token = server.prepare("validator", role="admin")
        server.start()
        server.wait_ready()
        worker = start_worker(server, "worker-1")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"

        # 1. The undisturbed run, timed from the upload to the last film.
        started = time.monotonic()
        first = upload_run(session, server.url, archive)
        body = wait_done(session, server.url, first, timeout=600)
        report["run_seconds"] = round(time.monotonic() - started, 1)
        run_metrics = body["metrics"]
        api = predictions_figures(session, server.url, films)
        report["run"] = {k: run_metrics[k] for k in ("n", "auc", "sensitivity", "specificity", "unknown_rate")}
        report["run_answer"] = {"metrics": run_metrics, "operating_points": body["operating_points"]}
        report["predictions_api"] = api
        report["largest_difference"] = max(abs(report["run"][k] - api[k]) for k in api if k != "n")

        # 2. SIGKILL the worker mid-run; a new worker finishes the run.
        second = upload_run(session, server.url, archive)
        deadline = time.monotonic() + 300
        while True:
            progress = session.get(f"{server.url}/api/v1/validation-runs/{second}", timeout=30).json()
            if progress["status"] in ("done", "failed") or time.monotonic() > deadline:
                raise RuntimeError(f"the worker could not be killed mid-run: {progress}")
            if progress["progress"]["done"] >= KILL_AFTER_FILMS:
                worker.stop(signal.SIGKILL)
                break
            time.sleep(0.1)
        report["killed_at"] = session.get(f"{server.url}/api/v1/validation-runs/{second}", timeout=30).json()[
            "progress"
        ]
        replacement = start_worker(server, "worker-2")
        resumed_at = time.monotonic()
        resumed = wait_done(session, server.url, second, timeout=600)
        report["seconds_from_replacement_ready_to_done"] = round(time.monotonic() - resumed_at, 1)
        with sqlite3.connect(server.database) as db:
            rows = dict(
                db.execute("SELECT state, count(*) FROM validation_items WHERE run_id=? GROUP BY state", (second,))
            )
            distinct = db.execute(
                "SELECT count(DISTINCT entry) FROM validation_items WHERE run_id=?", (second,)
            ).fetchone()[0]
        report["after_kill"] = {
            "status": resumed["status"],
            "n": resumed["metrics"]["n"],
            "progress": resumed["progress"],
            "item_rows": rows,
            "distinct_films": distinct,
            "same_figures_as_run_1": all(
                abs(resumed["metrics"][k] - run_metrics[k]) < 1e-6 for k in ("auc", "sensitivity", "specificity")
            ),
        }

        # 3. Adopt a site threshold, predict, withdraw, predict.
        youden = next(p for p in body["operating_points"] if p["name"] == "max Youden J")
        adopted = session.post(
            f"{server.url}/api/v1/site-calibration",
            json={"validation_run_id": first, "threshold": youden["threshold"], "reason": "check script"},
            timeout=30,
        )
        one = [("file", (films[0][1], films[0][2]))]

        def threshold_in_force(expected: float) -> tuple[float, float]:
            """Upload until the answer carries `expected` (each worker process keeps the operating
            point for OPERATING_POINT_SECONDS, so one that did not make the change takes it within
            that time), at most a second past it: the threshold of the last answer and when it came."""
            started = time.perf_counter()
            while True:
                answer = session.post(f"{server.url}/api/v1/predictions", files=one, timeout=60)
                threshold = answer.json()["predictions"][0]["threshold"]
                waited = time.perf_counter() - started
                if abs(threshold - expected) < 1e-9 or waited > OPERATING_POINT_SECONDS + 1:
                    return threshold, waited
                time.sleep(0.25)

        with_site, adopted_after = threshold_in_force(youden["threshold"])
        withdrawn = session.delete(f"{server.url}/api/v1/site-calibration", timeout=30)
        after, withdrawn_after = threshold_in_force(run_metrics["threshold"])
        report["site_threshold"] = {
            "adopt_status": adopted.status_code,
            "adopted": youden["threshold"],
            "prediction_threshold_while_adopted": with_site,
            "adopted_in_force_after_s": round(adopted_after, 2),
            "withdraw_status": withdrawn.status_code,
            "prediction_threshold_after_withdrawal": after,
            "withdrawal_in_force_after_s": round(withdrawn_after, 2),
            "card_threshold": run_metrics["threshold"],
        }

        # 4. Bad archives.
        with sqlite3.connect(server.database) as db:
            runs_before = db.execute("SELECT count(*) FROM validation_runs").fetchone()[0]
        statuses = {}
        for name, data in bad_archives(max_files).items():
            response = session.post(
                f"{server.url}/api/v1/validation-runs", files={"archive": (f"{name}.zip", data)}, timeout=120
            )
            statuses[name] = [response.status_code, response.json()["error"]["code"]]
        with sqlite3.connect(server.database) as db:
            runs_after = db.execute("SELECT count(*) FROM validation_runs").fetchone()[0]
        leftovers = sorted(p.name for p in (server.instance / "validation").iterdir())
        report["bad_archives"] = {
            "statuses": statuses,
            "runs_created": runs_after - runs_before,
            "files_left": leftovers,
        }
        replacement.stop()

    checks = {
        "run finished within 2 minutes": report["run_seconds"] < TIME_LIMIT_S,
        "run figures equal the API's within 0.005": report["largest_difference"] <= TOLERANCE,
        "n = 624 in both runs": report["run"]["n"] == len(films) == report["after_kill"]["n"],
        "killed run completed": report["after_kill"]["status"] == "done",
        "every film processed exactly once": report["after_kill"]["item_rows"] == {"done": len(films)}
        and report["after_kill"]["distinct_films"] == len(films)
        and report["after_kill"]["progress"] == {"done": len(films), "total": len(films)},
        "killed run has the undisturbed run's figures": report["after_kill"]["same_figures_as_run_1"],
        "adopted threshold used, then the card's again": report["site_threshold"]["adopt_status"] == 201
        and abs(report["site_threshold"]["prediction_threshold_while_adopted"] - youden["threshold"]) < 1e-9
        and report["site_threshold"]["withdraw_status"] == 204
        and abs(report["site_threshold"]["prediction_threshold_after_withdrawal"] - run_metrics["threshold"]) < 1e-9,
        "bad archives: 4xx, no run, nothing left": all(400 <= s < 500 for s, _ in statuses.values())
        and report["bad_archives"]["runs_created"] == 0
        and not leftovers,
    }
    report["checks"] = checks
    return report


def main() -> None:
    report = run_check()
    print(json.dumps(report, indent=2))
    failed = [name for name, ok in report["checks"].items() if not ok]
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)
    print("all validation-run checks passed")


if __name__ == "__main__":
    main()
