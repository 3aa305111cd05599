"""Serve with a missing, then a corrupt, model file under gunicorn, and show that

* /readyz answers 503 with a reason naming the model file, /healthz still 200,
* an upload gets a clear JSON 503 (model_unavailable), not a 500 or a dropped connection,
* each worker logs the failure exactly once and keeps running: no crash-and-respawn loop.

  .venv/bin/python scripts/check_broken_model.py       # prints a report; exit 1 on failure
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.live_app import ROOT, LiveApp  # noqa: E402  (needs the repository on sys.path)

SHIPPED = ROOT / "webapp" / "weights"
ERROR_LINE = "model could not be loaded"
WORKERS = 2
OBSERVE_S = 5.0  # long enough for gunicorn to respawn a crashed worker at least once


def broken_model(kind: str, folder: Path) -> Path:
    """The shipped model card beside a model file that is missing or cut short."""
    shutil.copy(SHIPPED / "model_card.json", folder / "model_card.json")
    model = folder / "cxr_pneumonia.keras"
    if kind == "corrupt":
        data = (SHIPPED / "cxr_pneumonia.keras").read_bytes()
        model.write_bytes(data[: len(data) // 2])
    return model


def check(kind: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"cxr-{kind}-model-"))
    try:
        model = broken_model(kind, folder)
        with LiveApp(env={"WEB_WORKERS": str(WORKERS), "MODEL_PATH": str(model)}) as server:
            token = server.prepare("broken-model-check")
            server.start()
            server.wait_for_log(ERROR_LINE, WORKERS, timeout=240)
            workers = server.worker_pids()
            time.sleep(OBSERVE_S)
            ready = requests.get(f"{server.url}/readyz", timeout=30)
            health = requests.get(f"{server.url}/healthz", timeout=30)
            upload = requests.post(
                f"{server.url}/api/v1/predictions",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": ("x.jpeg", (ROOT / "tests/fixtures/images/normal.jpeg").read_bytes(), "image/jpeg")},
                timeout=30,
            )
            report = {
                "model": kind,
                "readyz": [ready.status_code, ready.json()],
                "healthz": health.status_code,
                "upload": [upload.status_code, upload.json()],
                "error_lines": server.log_count(ERROR_LINE),
                "workers_at_failure": workers,
                "workers_after": server.worker_pids(),
                "master_alive": server.process.poll() is None,
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reasons = report["readyz"][1].get("reasons", [])
    report["checks"] = {
        "readyz 503 naming the model file": report["readyz"][0] == 503 and any(str(model) in r for r in reasons),
        "healthz 200": report["healthz"] == 200,
        "upload refused with model_unavailable": report["upload"][0] == 503
        and report["upload"][1].get("error", {}).get("code") == "model_unavailable",
        "one error line per worker": report["error_lines"] == WORKERS,
        "no worker restarted": report["workers_after"] == workers and len(workers) == WORKERS,
        "server still running": report["master_alive"],
    }
    return report


def main() -> None:
    reports = [check("missing"), check("corrupt")]
    print(json.dumps(reports, indent=2))
    failed = [f"{r['model']}: {name}" for r in reports for name, ok in r["checks"].items() if not ok]
    if failed:
        sys.exit("broken-model check FAILED: " + "; ".join(failed))
    print(
        "broken-model check passed: missing and corrupt model files give /readyz 503 with the reason, "
        "one error line per worker, no restarts"
    )


if __name__ == "__main__":
    main()
