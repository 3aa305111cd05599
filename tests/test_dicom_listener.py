"""What the listener agrees to at association, against a real pynetdicom requestor on a loopback port."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, events
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select

from tests.dicom_films import MODALITY_AE, film
from tests.live_app import free_port
from tests.orthanc_server import AE_TITLE as ORTHANC_AE
from tests.orthanc_server import NODE_AE_TITLE, OrthancServer
from webapp.extensions import db
from webapp.models import RECEIPT_SKIPPED, DicomReceipt
from webapp.pacs import header, listener

ROOT = Path(__file__).resolve().parent.parent
SCREENED = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)


def test_deflated_is_rejected_for_every_class_and_other_syntaxes_accepted(dicom_port):
    # Not only the screened classes: pynetdicom inflates any deflated data set without limit when the
    # handler reads it (a 128 KiB CT of zeros is 128 MB), so a deflated CT was a memory bomb too.
    deflated_only = (*SCREENED, CTImageStorage)
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(Verification)
    for sop_class in deflated_only:
        ae.add_requested_context(sop_class, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN")
    assert assoc.is_established
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert rejected == set(deflated_only)
    assert not {sop for sop, syntax in accepted if syntax == DeflatedExplicitVRLittleEndian}
    assert (ComputedRadiographyImageStorage, ExplicitVRLittleEndian) in accepted
    assert (CTImageStorage, ExplicitVRLittleEndian) in accepted


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _node(tmp_path: Path, port: int) -> subprocess.Popen:
    """`flask dicom listen` as an administrator starts it, on `port`."""
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "dicom", "listen"],
        cwd=ROOT,
        env=_node_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _node_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 40,
        "INSTANCE_DIR": str(tmp_path),
        "DICOM_PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    return env


def test_a_port_in_use_is_one_error_and_never_announced_as_listening(tmp_path):
    # The node logged "dicom node listening" before it bound the port, so a taken or mistyped address
    # read as a node that started and then failed.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = _node(tmp_path, taken.getsockname()[1])
        try:
            output, _ = node.communicate(timeout=60)
        finally:
            node.kill()
    assert node.returncode == 1
    assert "cannot listen on 127.0.0.1:" in output and "dicom node listening" not in output


@contextlib.contextmanager
def listening_node(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`flask dicom listen` on a free port, from its "listening" line on (killed at the end)."""
    port = free_port()
    node = _node(tmp_path, port)
    try:
        for line in node.stdout:
            if "dicom node listening" in line:
                break
        yield node, port
    finally:
        node.kill()


def test_sigterm_stops_the_node_cleanly(tmp_path):
    # As PID 1 in its container the node ignored SIGTERM (no default action there): `docker stop`
    # waited 10 s and killed it, exit 137. Outside a container SIGTERM killed it outright (-15).
    with listening_node(tmp_path) as (node, port):
        deadline = time.monotonic() + 30
        while not listening(port):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0


def test_sigterm_stops_the_node_within_dockers_grace_with_an_idle_connection_open(tmp_path):
    # Found by the node-flood review: a connection that never asked for an association (a load balancer's
    # probe, a port scan) was waited for until its ACSE timeout, 30 s, past `docker stop`'s 10 s grace,
    # and the node was killed (137); test_sigterm_stops_the_node_cleanly's own probe sometimes did that.
    with listening_node(tmp_path) as (node, port), socket.create_connection(("127.0.0.1", port)):
        time.sleep(0.5)
        stopping = time.monotonic()
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0
        assert time.monotonic() - stopping < 8
        # The connection was closed as the standard closes one that never asked: until 5 December an
        # A-ABORT the state machine does not take there put a thread's traceback in the log.
        said = node.stdout.read()
        assert "Traceback" not in said and "Invalid event" not in said


def test_sigterm_lets_an_association_in_progress_end(tmp_path):
    # Found reviewing the node's quick exit (os._exit once its server is closed): the server's shutdown
    # does not wait for associations (their threads are pynetdicom's own), the interpreter's exit did, as
    # docs/deployment.md promises. Exited at once, the node cut a PACS's association under way: the film
    # it sent after the SIGTERM was never answered, nor taken.
    upgrade = [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"]
    subprocess.run(upgrade, cwd=ROOT, env=_node_env(tmp_path, 11112), check=True, capture_output=True)
    with listening_node(tmp_path) as (node, port):
        ae = AE(ae_title=MODALITY_AE)
        ae.add_requested_context(ComputedRadiographyImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        assoc = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
        assert assoc.is_established
        node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while listening(port):  # the node stops: it closes its port first
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = assoc.send_c_store(dcmread(io.BytesIO(film(0))))
        assoc.release()
        assert node.wait(timeout=30) == 0
    assert "Status" in status and status.Status == 0x0000
    with contextlib.closing(sqlite3.connect(tmp_path / "cxr.sqlite")) as database:
        assert database.execute(f"SELECT count(*) FROM {DicomReceipt.__tablename__}").fetchone() == (1,)


def test_a_second_sigterm_while_the_node_stops_still_lets_the_association_under_way_end(tmp_path):
    # Found stopping ./scripts/run.sh with SIGTERM: its trap and then its last line each send SIGTERM, and
    # the second one, landing while the node waited for its associations, raised KeyboardInterrupt out of
    # the stop: click printed "Aborted!", the node exited 1, and an association under way (a film half
    # sent) was cut off. Ctrl-C then SIGTERM (run.sh in a terminal) did the same. Even one SIGTERM did not
    # wait: pynetdicom's shutdown joins no association (daemon threads), so the node exited under it.
    with listening_node(tmp_path) as (node, port):
        ae = AE(ae_title=MODALITY_AE)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
        assert assoc.is_established
        node.send_signal(signal.SIGTERM)
        time.sleep(1)
        node.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert node.poll() is None  # still waiting for the association
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert node.wait(timeout=30) == 0
        said = node.stdout.read()
        assert "Aborted!" not in said and "Traceback" not in said


def test_a_connection_that_never_asked_is_closed_at_the_stop_as_its_artim_timer_would(app, caplog):
    # Found measuring the stop on a busy host: the stop sent such a connection an A-ABORT, an event its
    # state (Sta2) does not take; pynetdicom's reactor thread died with a traceback in the node's log.
    app.config.update(DICOM_PORT=0)
    server = listener.start(app)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as probe:
            deadline = time.monotonic() + 10
            while not server.active_associations:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (association,) = server.active_associations
            while association.dul.state_machine.current_state != "Sta2":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            caplog.set_level(logging.INFO, logger="pynetdicom")
            listener._end_unestablished(association)
            association.dul.join(timeout=10)
            assert not association.dul.is_alive()
            probe.settimeout(10)
            assert probe.recv(1) == b""  # closed by the node
    finally:
        server.shutdown()
    assert "Invalid event" not in caplog.text and "Aborting" not in caplog.text


def test_a_rejected_association_is_logged_with_its_calling_ae_and_reason(app, caplog):
    # Found by the PACS review: the node's log said only pynetdicom's "Rejecting Association", so an
    # administrator could not see which AE title or host was turned away, nor why.
    app.config.update(DICOM_PORT=0, DICOM_ALLOWED_CALLING_AETS=(MODALITY_AE,))
    server = listener.start(app)
    try:
        caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
        ae = AE(ae_title="MODALTY")  # one letter missing, the commonest mistake
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="CXRSCREEN")
        assert assoc.is_rejected
        deadline = time.monotonic() + 5
        while "rejected" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
    assert "'MODALTY' at 127.0.0.1 rejected: its calling AE title is not in DICOM_ALLOWED_CALLING_AETS" in caplog.text


def test_refused_presentation_contexts_are_logged_with_the_calling_ae_and_why(dicom_port, caplog):
    # Found by the PACS review: dcmsend of a private Siemens object, a deflated-only film or a findscu
    # each failed at the sender ("No Acceptable Presentation Contexts") while the node's log said only
    # "Accepting Association" and "Association Released".
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(ComputedRadiographyImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context("1.3.12.2.1107.5.9.1", [ExplicitVRLittleEndian])
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN")
    assert assoc.is_established
    assoc.release()
    deadline = time.monotonic() + 5
    while "refused" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"calling AE '{MODALITY_AE}' at 127.0.0.1: 3 presentation context(s) refused" in caplog.text
    assert (
        "Computed Radiography Image Storage: none of the transfer syntaxes proposed (the first: Deflated Explicit "
        "VR Little Endian) is one the screening decodes" in caplog.text
    )
    assert "1.3.12.2.1107.5.9.1: not taken here" in caplog.text
    assert "Study Root Query/Retrieve Information Model - FIND: not taken here" in caplog.text


def send_as_stored(port: int, data: bytes, tmp_path: Path, monkeypatch) -> int:
    """C-STORE the file `data` with its data set sent as it is stored, unparsed (pynetdicom's chunked mode:
    the association's own C-STORE, so its answer is read by the association, not raced for by a second
    reader); returns the status."""
    stored = tmp_path / "sent.dcm"
    stored.write_bytes(data)
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    sop_class = read_file_meta_info(stored).MediaStorageSOPClassUID
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
    try:
        return assoc.send_c_store(stored).Status
    finally:
        assoc.release()


def test_a_data_set_that_cannot_be_read_is_answered_cannot_understand(dicom_port, app, caplog, tmp_path, monkeypatch):
    # Found by the PACS review: a data set with a sequence never closed was answered Out of Resources,
    # which tells the PACS to send it again (for ever) and its operator to look for a full disk here.
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    # (0008,1115) SQ of undefined length, an item of undefined length, one element, then nothing.
    unclosed = (
        b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
        + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
        + b"\x08\x00\x50\x11UI\x04\x001.2."
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DigitalXRayImageStorageForPresentation, "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = DicomBytesIO()
    header.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(header, meta)
    status = send_as_stored(dicom_port, header.getvalue() + unclosed, tmp_path, monkeypatch)
    assert status == 0xC000
    assert "its data set cannot be read" in caplog.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DicomReceipt)) == 0


def test_the_documented_orthanc_route_sends_again_a_film_the_node_turned_away(dicom_port, app, tmp_path, caplog):
    """Found by the PACS review: the routing rule docs/dicom.md gave (Lua SendToModality) tries once. A
    film routed while the node held its 10 associations was logged by Orthanc as "Unable to send
    instance" and never reached the node, though the docs said the sender retries. The rule the docs
    give now (the last Lua block) resubmits the failed store job."""
    rule = re.findall(r"```lua\n(.*?)```", (ROOT / "docs" / "dicom.md").read_text(), re.S)[-1]
    (tmp_path / "route.lua").write_text(rule)
    held = []
    for _ in range(10):  # the node's limit: Orthanc's association is the eleventh
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        held.append(ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN"))
    assert all(assoc.is_established for assoc in held)
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    orthanc = OrthancServer(NODE_AE_TITLE, dicom_port, settings={"LuaScripts": [str(tmp_path / "route.lua")]})
    try:
        assert requests.post(orthanc.url + "/instances", data=film(0), timeout=30).ok
        # Orthanc tries and is turned away: waited for, not slept on (3 s of sleep on a busy machine
        # could end before its first try, and the test then passed without any film turned away).
        turned_away = f"calling AE '{ORTHANC_AE}' at 127.0.0.1 rejected: too many associations at once"
        deadline = time.monotonic() + 60
        while turned_away not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.1)
        for assoc in held:
            assoc.release()
        deadline = time.monotonic() + 30
        received = 0
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
            with app.app_context():
                received = db.session.scalar(select(func.count()).select_from(DicomReceipt))
                db.session.remove()
        assert received == 1
    finally:
        orthanc.stop(remove=True)


def flooded(data: bytes, tag: int, items: int = 100_000) -> bytes:
    """The file `data` with an undefined-length sequence (0028,6100 Mask Subtraction or 0008,1115 Referenced
    Series) of `items` empty items, where its tag sorts."""
    ds = dcmread(io.BytesIO(data))
    ds.add_new(tag, "SQ", [])  # a placeholder, written as an empty defined-length sequence
    buffer = io.BytesIO()
    ds.save_as(buffer)
    placeholder = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ" + bytes(6)
    sequence = placeholder[:8] + b"\xff\xff\xff\xff" + (b"\xfe\xff\x00\xe0" + bytes(4)) * items
    sequence += b"\xfe\xff\xdd\xe0" + bytes(4)
    return buffer.getvalue().replace(placeholder, sequence, 1)


def test_a_film_flooded_with_sequence_items_is_refused_before_they_are_parsed(
    dicom_port, app, caplog, tmp_path, monkeypatch
):
    """Found by the fuzzing review: the node decoded the whole data set (pynetdicom's event.dataset), so a
    film of 100,000 empty sequence items before its pixel data (850 KB) took 1.4 to 2.2 s of the node's
    time, was answered Success and spooled, and the screening job refused it later. A film's header is now
    read up to its pixel data with the decoder's bound, and such a film refused while it is read."""
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    decoded_whole = []  # pynetdicom decodes the whole data set when its event.dataset is asked for
    monkeypatch.setattr(events.Event, "dataset", property(lambda event: decoded_whole.append(event)))
    status = send_as_stored(dicom_port, flooded(film(0), 0x00286100), tmp_path, monkeypatch)
    assert status == 0xC000
    assert decoded_whole == []  # was a wall-clock bound (under 1 s), missed by 0.06 s on a busy CI machine
    assert "far more elements than any film's (sequences of many thousands of items) before its pixel data" in (
        caplog.text
    )
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DicomReceipt)) == 0
    assert not [path for path in (tmp_path / "dicom").rglob("*") if path.is_file()]


def test_an_object_not_screened_is_read_up_to_its_study_only(dicom_port, app, tmp_path, monkeypatch):
    """Of an object the node only counts, the receipt needs nothing after the Study Instance UID: a flood
    before it is refused, one after it (where an RT Structure Set or an SR holds its many items) is not
    even read."""
    mr = film(0, modality="MR")
    assert send_as_stored(dicom_port, flooded(mr, 0x00081115), tmp_path, monkeypatch) == 0xC000
    streams = []  # the node's counted reads of each data set it is sent

    class Recorded(header.HeaderReads):
        def __init__(self, data: bytes):
            super().__init__(data)
            streams.append(self)

    monkeypatch.setattr(header, "HeaderReads", Recorded)
    assert send_as_stored(dicom_port, flooded(mr, 0x00286100, items=200_000), tmp_path, monkeypatch) == 0x0000
    (stream,) = streams  # read up to its study, not into its 1.7 MB of items (was a wall-clock bound of 1 s)
    assert stream.tell() < len(stream.getbuffer()) // 100
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert (receipt.state, receipt.modality) == (RECEIPT_SKIPPED, "MR")
