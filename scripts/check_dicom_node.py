"""The DICOM node end to end, as deployed on one machine: gunicorn (the web app), `flask dicom listen`
(the node) and `flask jobs worker` (the queue worker) as separate processes sharing one instance folder,
and Orthanc on loopback ports as the PACS. Shows, with the times measured:

  * C-ECHO from an allowed calling AE succeeds; an unlisted calling AE is refused at association;
  * one film when idle: its SR and secondary capture are in the PACS within 10 s of the C-STORE;
  * 8 films: within 60 s, 8 SRs and 8 secondary captures in the films' own studies (new series, the
    film's patient module), each SR's verdict TEXT equal to what POST /api/v1/predictions answers;
  * the PACS stopped, 2 films sent, the PACS restarted on the same ports 10 s later: both films'
    results arrive within 2 minutes of the restart;
  * the worker killed (SIGKILL) while it screens a film, a new worker started: the film is screened
    once and its results arrive once;
  * afterwards, no patient name, ID, accession number or UID of any film in any file of the
    instance folder (database, queue, spool, outbox, the three processes' logs).

    .venv/bin/python scripts/check_dicom_node.py [--json report.json]     # exit 1 on failure
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import requests
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.dicom_films import MODALITY_AE, echo, film, identifiers, store  # noqa: E402
from tests.live_app import free_port  # noqa: E402
from tests.node_processes import NodeProcesses  # noqa: E402
from tests.orthanc_server import NODE_AE_TITLE, OrthancServer  # noqa: E402

IDLE_LIMIT_S, BATCH_LIMIT_S, OUTAGE_LIMIT_S = 10.0, 60.0, 120.0
VERDICT_MEANING = "AI screening verdict"


def verdict_text(sr) -> str | None:
    def walk(items):
        for item in items:
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == VERDICT_MEANING:
                return item.TextValue
            if "ContentSequence" in item and (found := walk(item.ContentSequence)):
                return found
        return None

    return walk(sr.ContentSequence)


class Node(NodeProcesses):
    """The three processes of one deployment, its results sent to Orthanc."""

    def __init__(self, orthanc: OrthancServer, extra_env: dict[str, str] | None = None):
        self.orthanc = orthanc
        env = {
            "DICOM_PORT": str(orthanc.node_port),
            "DICOM_AE_TITLE": NODE_AE_TITLE,
            "DICOM_ALLOWED_CALLING_AETS": f"{MODALITY_AE},ORTHANC",
            "DICOM_RESULTS_DESTINATION": orthanc.destination,
            **(extra_env or {}),
        }
        super().__init__(env)

    def api_label(self, data: bytes) -> str:
        response = requests.post(
            self.web.url + "/api/v1/predictions",
            headers={"Authorization": f"Bearer {self.token}"},
            files={"file": ("film.dcm", data)},
            timeout=120,
        )
        response.raise_for_status()
        return response.json()["predictions"][0]["label"]


def results_for(orthanc: OrthancServer, films: list[bytes]) -> dict[str, list]:
    """The PACS's instances in each film's study other than the film itself, by study UID."""
    studies = {str(dcmread(io.BytesIO(f), stop_before_pixels=True).StudyInstanceUID) for f in films}
    found: dict[str, list] = {uid: [] for uid in studies}
    for orthanc_id in orthanc.instance_ids():
        ds = orthanc.instance(orthanc_id)
        if str(ds.StudyInstanceUID) in found:
            found[str(ds.StudyInstanceUID)].append(ds)
    return found


def wait_results(orthanc: OrthancServer, films: list[bytes], limit_s: float) -> float | None:
    """Seconds until every film has its SR and SC in the PACS (None: not within limit_s)."""
    started = time.monotonic()
    studies = {str(dcmread(io.BytesIO(f), stop_before_pixels=True).StudyInstanceUID) for f in films}
    while time.monotonic() - started < limit_s:
        try:
            per_study = {}
            for orthanc_id in orthanc.instance_ids():
                tags = requests.get(f"{orthanc.url}/instances/{orthanc_id}/simplified-tags", timeout=10).json()
                per_study.setdefault(tags.get("StudyInstanceUID"), []).append(tags.get("Modality"))
            if all(sorted(per_study.get(uid, [])) == ["OT", "SR"] for uid in studies):
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    return None


def store_and_time(orthanc: OrthancServer, port: int, films: list[bytes], limit_s: float):
    """C-STORE the films; their statuses and the seconds from the C-STORE until every film's results are
    in the PACS (None: not within limit_s)."""
    started = time.monotonic()
    statuses = store(port, films)
    seconds = wait_results(orthanc, films, limit_s)
    return statuses, None if seconds is None else round(time.monotonic() - started, 2)


def check(report: dict, name: str, ok: bool, **figures) -> None:
    report["checks"].append({"check": name, "ok": bool(ok), **figures})
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {json.dumps(figures)}", flush=True)


def run(report: dict) -> None:
    orthanc = OrthancServer(NODE_AE_TITLE, free_port())
    try:
        node = Node(orthanc, extra_env={"WEB_WORKERS": "1"})
    except BaseException:
        orthanc.stop(remove=True)
        raise
    sent: list[bytes] = []
    try:
        node.start()
        port = orthanc.node_port
        check(report, "C-ECHO from an allowed AE", echo(port, MODALITY_AE) == 0)
        check(
            report,
            "calling AE not in DICOM_ALLOWED_CALLING_AETS refused at association",
            echo(port, "STRANGER") is None,
        )

        # One film on an idle node.
        idle = [film(100)]
        sent += idle
        _, total = store_and_time(orthanc, port, idle, IDLE_LIMIT_S * 3)
        check(
            report,
            "idle: results in the PACS within 10 s of the C-STORE",
            total is not None and total <= IDLE_LIMIT_S,
            seconds=total,
            limit_s=IDLE_LIMIT_S,
        )

        # Eight films.
        batch = [film(i) for i in range(8)]
        sent += batch
        statuses, total = store_and_time(orthanc, port, batch, BATCH_LIMIT_S * 2)
        check(
            report,
            "8 films: 8 SR + 8 SC within 60 s",
            statuses == [0] * 8 and total is not None and total <= BATCH_LIMIT_S,
            seconds=total,
            limit_s=BATCH_LIMIT_S,
        )
        found = results_for(orthanc, batch)
        agree, patient_ok = 0, 0
        for data in batch:
            source = dcmread(io.BytesIO(data))
            mine = found[str(source.StudyInstanceUID)]
            sr = next((ds for ds in mine if ds.Modality == "SR"), None)
            if sr is not None and verdict_text(sr) == node.api_label(data):
                agree += 1
            if len(mine) == 2 and all(
                ds.PatientName == source.PatientName
                and ds.PatientID == source.PatientID
                and ds.SeriesInstanceUID != source.SeriesInstanceUID
                for ds in mine
            ):
                patient_ok += 1
        check(report, "each SR's verdict equals POST /api/v1/predictions for the same file", agree == 8, agreeing=agree)
        check(
            report,
            "results in the films' studies, new series, the film's patient module",
            patient_ok == 8,
            films=patient_ok,
        )

        # A PACS outage.
        orthanc.stop()
        outage = [film(200), film(201)]
        store(port, outage)
        sent += outage
        time.sleep(10)
        orthanc.start()
        seconds = wait_results(orthanc, outage, OUTAGE_LIMIT_S * 2)
        check(
            report,
            "PACS down 10 s: both results within 2 min of its restart",
            seconds is not None and seconds <= OUTAGE_LIMIT_S,
            seconds=None if seconds is None else round(seconds, 2),
            limit_s=OUTAGE_LIMIT_S,
        )

        # The worker killed while it screens a film.
        killed = None
        for attempt in range(5):
            victim = [film(300 + attempt)]
            with node.db() as db:
                before = db.execute("SELECT max(id) FROM dicom_receipts").fetchone()[0]
            store(port, victim)
            sent += victim
            deadline = time.monotonic() + 30
            state = None
            while time.monotonic() < deadline:
                with node.db() as db:
                    row = db.execute("SELECT id, state FROM dicom_receipts WHERE id > ?", (before,)).fetchone()
                state = row[1] if row else None
                if state != "queued" and state is not None:
                    break
                time.sleep(0.005)
            if state == "screening":
                os.kill(node.worker.process.pid, signal.SIGKILL)
                node.worker.process.wait()
                killed = (row[0], victim)
                break
        if killed is None:
            check(report, "worker killed mid-job: the film screened once", False, note="never caught a job in flight")
        else:
            receipt_id, victim = killed
            started = time.monotonic()
            node.new_worker()
            seconds = wait_results(orthanc, victim, 180)
            time.sleep(3)  # anything screened twice would have shown by now
            with node.db() as db:
                predictions = db.execute(
                    "SELECT count(*) FROM dicom_receipts r JOIN predictions p ON p.id = r.prediction_id WHERE r.id = ?",
                    (receipt_id,),
                ).fetchone()[0]
                results = db.execute(
                    "SELECT count(*) FROM dicom_results WHERE receipt_id = ?", (receipt_id,)
                ).fetchone()[0]
            in_pacs = len(results_for(orthanc, victim)[str(dcmread(io.BytesIO(victim[0])).StudyInstanceUID)])
            check(
                report,
                "worker killed mid-job, a new one started: the film screened once, its results once",
                seconds is not None and predictions == 1 and results == 2 and in_pacs == 2,
                seconds_after_new_worker_start=None if seconds is None else round(time.monotonic() - started, 2),
                predictions=predictions,
                results=results,
                in_pacs=in_pacs,
            )
    finally:
        node.stop()
        orthanc.stop(remove=True)
    # Nothing identifying anywhere in the instance folder, the logs of the three processes included.
    secret_values = {value for data in sent for value in identifiers(data)}
    leaks = []
    for path in Path(node.web.instance).rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaks += [f"{path.name}: {value[:12]}..." for value in secret_values if value.encode() in content]
    check(
        report,
        "no patient name, ID, accession number or UID in the instance folder",
        not leaks,
        files_checked=sum(1 for p in Path(node.web.instance).rglob("*") if p.is_file()),
        leaks=leaks[:5],
    )
    node.web.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    report: dict = {"checks": []}
    run(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = [c["check"] for c in report["checks"] if not c["ok"]]
    print("all DICOM node checks passed" if not failed else f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
