"""Do films from the PACS slow down a clinician's upload? The deployment of scripts/run.sh on one
machine (gunicorn, `flask jobs worker`, `flask dicom listen`, Orthanc as the PACS): a browser upload
(sign-in session, CSRF token, POST /screen with one film) is timed on an idle node, then while a
burst of PACS films (200 by default) is being screened by the queue worker, then idle again.

The figure is the ratio of median upload times, burst over idle (both idle runs pooled), measured in
the same run; the aim is at most 2. Uploads during the burst are only counted while the worker still
has films to screen. The modality (a separate process) and Orthanc run at the lowest priority: in
production they are other machines, and their CPU is not this node's.

    .venv/bin/python scripts/measure_dicom_priority.py [--films 200] [--uploads 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.check_dicom_node import Node  # noqa: E402
from tests.dicom_films import film  # noqa: E402
from tests.live_app import ROOT, free_port  # noqa: E402
from tests.orthanc_server import NODE_AE_TITLE, OrthancServer  # noqa: E402

UPLOAD = ROOT / "tests" / "fixtures" / "images" / "pneumonia.jpeg"
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


class Browser:
    def __init__(self, url: str, username: str, password: str):
        self.url, self.session = url, requests.Session()
        token = CSRF.search(self.session.get(url + "/auth/login", timeout=30).text).group(1)
        self.session.post(
            url + "/auth/login", data={"username": username, "password": password, "csrf_token": token}, timeout=30
        ).raise_for_status()

    def upload(self) -> float:
        token = CSRF.search(self.session.get(self.url + "/screen", timeout=60).text).group(1)
        started = time.perf_counter()
        response = self.session.post(
            self.url + "/screen",
            data={"csrf_token": token},
            files={"files": (UPLOAD.name, UPLOAD.read_bytes(), "image/jpeg")},
            timeout=300,
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or "/screen/results" not in response.url:
            raise RuntimeError(f"upload failed: {response.status_code} {response.url}")
        return elapsed


def unscreened(node: Node) -> int:
    with sqlite3.connect(node.web.database, timeout=30) as db:
        return db.execute("SELECT count(*) FROM dicom_receipts WHERE state IN ('queued', 'screening')").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    orthanc = OrthancServer(NODE_AE_TITLE, free_port(), niceness=19)  # the PACS: another machine in production
    report: dict = {"films": args.films}
    try:
        node = Node(orthanc, extra_env={"SESSION_COOKIE_SECURE": "false"})
        password = node.web.create_user("reader", "clinician")
    except BaseException:
        orthanc.stop(remove=True)
        raise
    try:
        node.start()
        browser = Browser(node.web.url, "reader", password)
        browser.upload()  # the first request of each worker is slower; not counted
        browser.upload()
        idle_before = [browser.upload() for _ in range(args.uploads)]
        folder = Path(tempfile.mkdtemp(prefix="cxr-burst-"))
        for i in range(args.films):
            (folder / f"{i:04d}.dcm").write_bytes(film(1000 + i))
        burst_started = time.monotonic()
        # The modality sends from its own process (its own machine in production), at the lowest priority.
        sender = subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "tests.dicom_films", str(orthanc.node_port), str(folder)],
            cwd=ROOT,
        )
        while unscreened(node) < min(20, args.films):  # the worker has a queue to work through
            time.sleep(0.1)
        during = []
        while len(during) < args.uploads and unscreened(node) > 0:
            seconds = browser.upload()
            if unscreened(node) > 0:
                during.append(seconds)
        sender.wait()
        shutil.rmtree(folder, ignore_errors=True)
        while unscreened(node) > 0:
            time.sleep(1)
        report["burst_screened_s"] = round(time.monotonic() - burst_started, 1)
        idle_after = [browser.upload() for _ in range(args.uploads)]
    finally:
        node.stop()
        orthanc.stop(remove=True)
        node.web.remove()
    idle = idle_before + idle_after
    report.update(
        uploads_idle=len(idle),
        uploads_during_burst=len(during),
        median_idle_s=round(statistics.median(idle), 3),
        median_during_burst_s=round(statistics.median(during), 3) if during else None,
    )
    report["ratio_burst_over_idle"] = (
        round(report["median_during_burst_s"] / report["median_idle_s"], 2) if during else None
    )
    report["ok"] = bool(during) and report["ratio_burst_over_idle"] <= 2.0
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
