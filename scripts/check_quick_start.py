"""The README's first command, as a newcomer runs it: `./scripts/run.sh` in a fresh clone.

From a `git clone` of this repository into an empty folder (committed files only: no .venv, no
instance/, no ../shared beside it) the script must build its own .venv, migrate the SQLite
database, create the admin, and serve all three parts of the app until it is stopped. Shown here:

  * /healthz and /readyz answer 200 (the model loaded from the clone alone);
  * the printed admin password, kept in instance/initial_admin_password, signs in and lands on
    the page that makes the admin choose a new one;
  * the DICOM node answers a C-ECHO, and the job worker is running;
  * SIGTERM to run.sh stops all three: no process of the clone is left.

    .venv/bin/python scripts/check_quick_start.py      # exit 1 on failure (CI runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.stack_checks import CheckFailed, Client, expect, sign_in  # noqa: E402
from tests.live_app import ROOT, free_port, http_status  # noqa: E402

# Building .venv downloads nothing on a machine whose pip cache is warm (CI's test step fills it),
# but installing TensorFlow still takes minutes on two cores.
READY_LIMIT_S = 900.0
STOP_LIMIT_S = 60.0
# Settings a developer's shell may carry that would point the clone away from its own defaults
# (the checks below expect the DICOM node's default AE title and address).
FOREIGN_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "MODEL_PATH",
    "APP_ENV",
    "SECRET_KEY",
    "ADMIN_PASSWORD",
    "VIRTUAL_ENV",
    "DICOM_AE_TITLE",
    "DICOM_BIND",
)


def processes_of(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process in the session that run.sh leads."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ProcessLookupError):
            continue  # ended while we looked
        found.append((int(entry.name), command))
    return found


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_LIMIT_S:
        if process.poll() is not None:
            raise CheckFailed(f"run.sh exited with {process.returncode} before serving:\n{tail(log)}")
        if http_status(url + "/readyz", timeout=10) == 200:
            return time.monotonic() - started
        time.sleep(2)
    raise CheckFailed(f"/readyz not 200 within {READY_LIMIT_S:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def check_admin(url: str, clone: Path, log: Path) -> None:
    kept = clone / "instance" / "initial_admin_password"
    expect(kept.is_file(), "instance/initial_admin_password was not written")
    password = kept.read_text().strip()
    expect(f"password '{password}'" in log.read_text(), "run.sh did not print the admin's password")
    landing = sign_in(Client(url), "admin", password)
    expect("new password" in landing.text.lower(), "the first sign-in did not land on the change-password page")


def check_dicom_node(port: int) -> None:
    ae = AE(ae_title="QUICKSTART")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
    expect(association.is_established, f"the DICOM node on port {port} refused the association")
    status = association.send_c_echo()
    association.release()
    expect(status is not None and status.Status == 0x0000, "C-ECHO to the DICOM node did not succeed")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"run.sh did not end within {STOP_LIMIT_S:.0f} s of SIGTERM") from exc
    deadline = time.monotonic() + 10
    while (left := processes_of(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    expect(not left, f"processes left after run.sh ended: {left}")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxr-quick-start-") as folder:
        clone = Path(folder) / "cxr"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        web_port, dicom_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
        env.update(BIND=f"127.0.0.1:{web_port}", DICOM_PORT=str(dicom_port))
        log = Path(folder) / "run.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["./scripts/run.sh"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{web_port}"
        try:
            ready_s = wait_ready(url, process, log)
            expect(http_status(url + "/healthz") == 200, "/healthz did not answer 200")
            check_admin(url, clone, log)
            check_dicom_node(dicom_port)
            commands = [command for _, command in processes_of(process.pid)]
            expect(any("jobs worker" in c for c in commands), f"no job worker among {commands}")
            stop(process)
        except CheckFailed as failure:
            print(f"quick start FAILED: {failure}", file=sys.stderr)
            return 1
        finally:
            if process.poll() is None or processes_of(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
    print(
        f"quick start: a fresh clone's ./scripts/run.sh served /readyz after {ready_s:.0f} s (its .venv built "
        "included); the admin signed in with the printed password and was asked for a new one; the DICOM node "
        "answered C-ECHO; the job worker ran; SIGTERM stopped all three"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
