"""The node's parts without a network: what a C-STORE leaves behind when the disk or the queue fails,
the destination setting, and the SR and secondary capture built for a film."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from tests.dicom_films import CR_IMAGE_STORAGE, film
from tests.helpers import drain
from webapp.extensions import db
from webapp.models import RECEIPT_QUEUED, RECEIPT_REFUSED, RECEIPT_SCREENED, DicomReceipt, Prediction
from webapp.pacs import intake, spool
from webapp.pacs.results import BANNER, Verdict, build_capture, build_sr
from webapp.pacs.sender import DestinationError, parse_destination


def arrival(data: bytes) -> intake.Arrival:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return intake.Arrival(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        modality=str(ds.Modality),
        calling_aet="MODALITY",
        file_bytes=data,
    )


def left_behind(app) -> tuple[int, list[str], int]:
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(DicomReceipt))
        files = [p.name for p in spool.folder(spool.SPOOL).iterdir()]
        return rows, files, app.extensions["jobs"].pending()


def test_a_film_is_spooled_and_queued_before_success(app):
    with app.app_context():
        assert intake.receive(arrival(film(0))) == intake.SUCCESS
    rows, files, pending = left_behind(app)
    assert (rows, len(files), pending) == (1, 1, 1)
    assert not [name for name in files if name.startswith(".")]  # no temporary file left


def test_a_full_disk_is_answered_out_of_resources_and_leaves_nothing(app, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "write", disk_full)
    with app.app_context():
        assert intake.receive(arrival(film(0))) == intake.OUT_OF_RESOURCES
    assert left_behind(app) == (0, [], 0)


def test_a_queue_that_fails_is_answered_out_of_resources_and_leaves_nothing(app, monkeypatch):
    def queue_down(*args):
        raise ConnectionError("queue unreachable")

    monkeypatch.setattr(intake, "enqueue", queue_down)
    data = film(0)
    with app.app_context():
        assert intake.receive(arrival(data)) == intake.OUT_OF_RESOURCES
    assert left_behind(app) == (0, [], 0)
    monkeypatch.undo()
    with app.app_context():  # the PACS sends it again later: taken this time
        assert intake.receive(arrival(data)) == intake.SUCCESS
    assert left_behind(app)[0] == 1


def test_destination_setting():
    destination = parse_destination("ORTHANC@pacs.example.org:4242")
    assert (destination.ae_title, destination.host, destination.port) == ("ORTHANC", "pacs.example.org", 4242)
    for bad in ("pacs:4242", "ORTHANC@pacs", "@pacs:4242", "ORTHANC@pacs:port", "A" * 17 + "@pacs:1"):
        with pytest.raises(DestinationError):
            parse_destination(bad)


def test_sr_holds_the_unknown_reason_and_capture_the_banner():
    source = dcmread(io.BytesIO(film(1)))
    assert source.SOPClassUID == CR_IMAGE_STORAGE
    verdict = Verdict("UNKNOWN", 0.42, 0.37, "The image does not look like a chest radiograph.", "v-test")
    sr = build_sr(source, verdict)
    texts = {}

    def walk(items):
        for item in items:
            if item.ValueType == "TEXT":
                texts[item.ConceptNameCodeSequence[0].CodeMeaning] = item.TextValue
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    assert texts["AI screening verdict"] == "UNKNOWN"
    assert texts["Reason for UNKNOWN"] == verdict.unknown_reason
    assert texts["Disclaimer"] == BANNER
    pixels = np.full((400, 300), 0.5, np.float32)
    capture = build_capture(source, verdict, pixels, np.zeros((16, 16), np.float32))
    rgb = capture.pixel_array
    assert rgb.shape == (400, 300, 3)
    top, middle = rgb[:10], rgb[200]
    assert top.min() == 0 and (top[..., 0] > 200).any()  # the black band with the yellow warning
    assert abs(int(middle[150, 0]) - 128) <= 2  # the film itself, untouched where the map is cold


def test_a_refused_film_sent_again_is_screened_and_a_screened_one_only_counted(app):
    data = film(0)
    damaged = data[: len(data) - 5000]  # the same instance, its pixel data cut short
    with app.app_context():
        assert intake.receive(arrival(damaged)) == intake.SUCCESS
    drain(app)
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_REFUSED
        assert intake.receive(arrival(data)) == intake.SUCCESS  # the re-send the refusal asked for
        receipt = db.session.scalar(select(DicomReceipt))
        assert (receipt.state, receipt.error, receipt.copies) == (RECEIPT_QUEUED, None, 2)
        assert receipt.spool_name in [p.name for p in spool.folder(spool.SPOOL).iterdir()]
    assert drain(app) == 1
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state == RECEIPT_SCREENED and receipt.prediction_id is not None
        assert intake.receive(arrival(data)) == intake.SUCCESS  # a duplicate of a screened film
    assert drain(app) == 0
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert (receipt.state, receipt.copies) == (RECEIPT_SCREENED, 3)
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 1
