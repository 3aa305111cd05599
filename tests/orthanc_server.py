"""A throwaway Orthanc playing the PACS: Debian's `Orthanc` with a JSON configuration written here
(DICOM and HTTP ports free on loopback, storage in a temporary folder, no authentication, our node
declared as a modality). Can be stopped and started again on the same ports (a PACS outage). Skips
when the binary is missing (.ci/run installs it, so CI always runs these tests).

Orthanc 1.10 has no option to bind its DICOM port to one interface: it listens on all of them, and
everything here talks to it on 127.0.0.1 only; its HTTP port refuses remote clients.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from pydicom import Dataset, dcmread

from tests.redis_server import free_port

AE_TITLE = "ORTHANC"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).is_file()), None
    )


class OrthancServer:
    def __init__(self, node_ae_title: str, node_port: int, niceness: int = 0, settings: dict | None = None):
        """`settings`: Orthanc configuration over the defaults below (a PACS configured otherwise)."""
        self.node_ae_title, self.node_port = node_ae_title, node_port
        binary = orthanc_binary()
        if binary is None:
            pytest.skip("Orthanc is not installed (apt-get install orthanc); .ci/run installs it")
        # A benchmark lowers the priority of the PACS, which in production runs on its own machine.
        self.command = [*(["nice", "-n", str(niceness)] if niceness else []), binary]
        self.folder = Path(tempfile.mkdtemp(prefix="cxr-orthanc-"))
        self.dicom_port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.destination = f"{AE_TITLE}@127.0.0.1:{self.dicom_port}"
        self.config_path = self.folder / "orthanc.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "Name": "cxr-test-pacs",
                    "StorageDirectory": str(self.folder / "storage"),
                    "IndexDirectory": str(self.folder / "storage"),
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": AE_TITLE,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": False,
                    "DicomAlwaysAllowEcho": True,
                    "DicomAlwaysAllowStore": True,
                    "DicomModalities": {"cxrscreen": [node_ae_title, "127.0.0.1", node_port]},
                    "Plugins": [],
                    "StableAge": 2,
                    **(settings or {}),
                }
            )
        )
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115  (the child keeps its own descriptor)
        self.process = subprocess.Popen([*self.command, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "/system", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "orthanc.log").read_text(errors="replace")[-2000:]
                self.stop(remove=False)
                raise RuntimeError(f"Orthanc did not start:\n{tail}")
            time.sleep(0.1)

    def stop(self, remove: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------ the REST API
    def instance_ids(self) -> list[str]:
        return requests.get(self.url + "/instances", timeout=10).json()

    def instance(self, orthanc_id: str) -> Dataset:
        response = requests.get(f"{self.url}/instances/{orthanc_id}/file", timeout=30)
        response.raise_for_status()
        return dcmread(io.BytesIO(response.content))

    def datasets(self) -> list[Dataset]:
        return [self.instance(i) for i in self.instance_ids()]

    def clear(self) -> None:
        for orthanc_id in self.instance_ids():
            requests.delete(f"{self.url}/instances/{orthanc_id}", timeout=10)


NODE_AE_TITLE = "CXRSCREEN"


@pytest.fixture(scope="session")
def orthanc_server():
    """Orthanc on free loopback ports, knowing our node (AE CXRSCREEN) on `node_port`."""
    server = OrthancServer(NODE_AE_TITLE, free_port())
    yield server
    server.stop(remove=True)
