"""The queue side of serving: a burst of films from a PACS, and a validation run, through the real processes.

    .venv/bin/python -m benchmarks.queue_bench [--quick] [--json out.json]

One deployment on a fresh instance folder, as docs/dicom.md runs it: gunicorn (the web app), the
DICOM node (`flask dicom listen`) and the queue worker (`flask jobs worker`), on the embedded
SQLite queue. Three measurements:
- a PACS burst: BURST DICOM films (the fixture radiographs as CR of a 4-year-old, each a study of its own) sent
  over ASSOCIATIONS associations at once, as a PACS forwarding a backlog does; from the first
  C-STORE until the last film's prediction is logged (no results destination: screening only);
- the same burst's two halves apart: BURST more films taken by the node with the worker stopped
  (the intake alone), then drained by a fresh worker (the queue alone, from its first to its last
  logged prediction);
- a validation run: a ZIP of the official test films (../shared/data/chest_xray/test, labelled by
  folder) posted to POST /api/v1/validation-runs; from the upload until GET says `done`.
It exits non-zero when a film goes missing or a run fails, never because of a timing.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path

import requests
from pydicom import dcmread

from tests.dicom_films import MODALITY_AE, film, store
from tests.live_app import ROOT, free_port
from tests.node_processes import NodeProcesses

TEST_FILMS = ROOT.parent / "shared" / "data" / "chest_xray" / "test"
BURST, QUICK_BURST = 200, 12
QUICK_VALIDATION_FILMS = 40  # per class, in --quick
WORKER_THREADS = 4  # jobs at once in the worker: films screened together share forward passes
ASSOCIATIONS = 4  # the PACS's associations at once


class Deployment(NodeProcesses):
    """The web app, the node and the worker (docs/dicom.md), and an admin's API token."""

    def __init__(self, worker_threads: int):
        env = {
            "DICOM_PORT": str(free_port()),
            "DICOM_ALLOWED_CALLING_AETS": MODALITY_AE,
            "RATE_LIMITS_ENABLED": "false",
        }
        super().__init__(env, worker_threads, name="queue-web")
        self.port = int(env["DICOM_PORT"])
        self.web.create_user("admin", role="admin")
        self.admin_token = self.web.api_token("admin")

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def receipts(self) -> dict[str, int]:
        with self.db() as db:
            return dict(db.execute("SELECT state, count(*) FROM dicom_receipts GROUP BY state").fetchall())


def burst(deployment: Deployment, count: int, associations: int = ASSOCIATIONS) -> dict:
    started = time.perf_counter()
    send(deployment, range(count), associations)
    stored_s = time.perf_counter() - started
    wait_until_screened(deployment, count, started)
    total_s = time.perf_counter() - started
    return {
        "films": count,
        "associations": associations,
        "stored_s": stored_s,
        "total_s": total_s,
        "films_per_s": count / total_s,
    }


def backlog(deployment: Deployment, count: int, associations: int = ASSOCIATIONS) -> dict:
    """The burst's two halves apart, after `burst` (new films): the node takes `count` films while no
    worker runs (the intake alone), then a fresh worker drains them (the queue alone, timed from its
    first to its last logged prediction, so that its start-up and model load are not counted)."""
    deployment.worker.stop()
    done_before = sum(deployment.receipts().values())
    started = time.perf_counter()
    send(deployment, range(done_before, done_before + count), associations)
    intake_s = time.perf_counter() - started
    deployment.new_worker()
    wait_until_screened(deployment, done_before + count, time.perf_counter())
    with deployment.db() as db:
        rows = db.execute("SELECT created_at FROM predictions ORDER BY id DESC LIMIT ?", (count,)).fetchall()
    stamps = [datetime.fromisoformat(created) for (created,) in rows]
    drain_s = (max(stamps) - min(stamps)).total_seconds()
    return {
        "films": count,
        "intake_s": intake_s,
        "intake_films_per_s": count / intake_s,
        "drain_s": drain_s,
        "drain_films_per_s": (count - 1) / drain_s if drain_s else float("inf"),
    }


def send(deployment: Deployment, indices: range, associations: int) -> None:
    """C-STORE the films `indices` (each a new instance) as a PACS forwards a backlog: over a few
    associations at once, each C-STORE waiting for its answer."""
    films = [as_child(film(i)) for i in indices]
    with ThreadPoolExecutor(associations) as pool:
        statuses = [s for part in pool.map(partial(store, deployment.port), chunks(films, associations)) for s in part]
    if any(status != 0 for status in statuses):
        raise RuntimeError(f"C-STORE statuses {set(statuses)}")


def wait_until_screened(deployment: Deployment, total: int, started: float) -> None:
    """Until `total` films (all received so far) have been screened; every one must be."""
    deadline = started + 600
    while (states := deployment.receipts()).get("screened", 0) + states.get("refused", 0) < total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {states} of {total} films done after 600 s")
        time.sleep(0.05)
    if states.get("screened") != total:
        raise RuntimeError(f"receipts {states}, expected {total} screened")


def as_child(data: bytes) -> bytes:
    """The film with a 4-year-old's birth date (the test films' study is in 2026): within the intended
    use, so it is answered like any film from the PACS rather than refused by the header age."""
    dataset = dcmread(io.BytesIO(data))
    dataset.PatientBirthDate = "20220101"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def chunks(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


def validation_archive(per_class: int | None) -> tuple[bytes, int]:
    """The official test films as a labelled ZIP (stored, not deflated: JPEGs do not shrink)."""
    buffer, count = io.BytesIO(), 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for label in ("NORMAL", "PNEUMONIA"):
            paths = sorted((TEST_FILMS / label).glob("*.jpeg"))[:per_class]
            for path in paths:
                archive.write(path, f"{label}/{path.name}")
            count += len(paths)
    return buffer.getvalue(), count


def validation(deployment: Deployment, per_class: int | None) -> dict:
    archive, count = validation_archive(per_class)
    headers = {"Authorization": f"Bearer {deployment.admin_token}"}
    api = deployment.web.url + "/api/v1/validation-runs"
    started = time.perf_counter()
    answer = requests.post(api, headers=headers, files={"archive": ("test.zip", archive)}, timeout=120)
    if answer.status_code != 202:
        raise RuntimeError(f"validation: POST answered {answer.status_code}: {answer.text[:300]}")
    run_url = f"{api}/{answer.json()['id']}"
    while (run := requests.get(run_url, headers=headers, timeout=30).json())["status"] not in ("done", "failed"):
        if time.perf_counter() - started > 900:
            raise RuntimeError(f"validation: not done after 900 s: {run.get('progress')}")
        time.sleep(0.1)
    total_s = time.perf_counter() - started
    if run["status"] != "done" or run["progress"]["done"] != count:
        raise RuntimeError(f"validation: {run['status']}, {run['progress']} of {count} films")
    return {"films": count, "total_s": total_s, "films_per_s": count / total_s, "metrics": run.get("metrics")}


def measure(quick: bool, worker_threads: int = WORKER_THREADS) -> dict:
    if not TEST_FILMS.is_dir():
        raise RuntimeError(f"no official test films at {TEST_FILMS}")
    with Deployment(worker_threads) as deployment:
        return {
            "worker_threads": worker_threads,
            "burst": burst(deployment, QUICK_BURST if quick else BURST),
            "backlog": backlog(deployment, QUICK_BURST if quick else BURST),
            "validation": validation(deployment, QUICK_VALIDATION_FILMS if quick else None),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=WORKER_THREADS, help="the queue worker's --threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.quick, args.threads)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
