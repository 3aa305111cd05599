"""The node's parts without a network: what a C-STORE leaves behind when the disk or the queue fails,
the destination setting, and the SR and secondary capture built for a film."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import time
from datetime import timedelta

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from tests.dicom_films import CR_IMAGE_STORAGE, DEVICE_UID, film
from tests.helpers import drain, reset_database
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.jobs.queue import run_recoveries
from webapp.models import (
    RECEIPT_QUEUED,
    RECEIPT_REFUSED,
    RECEIPT_SCREENED,
    RESULT_FAILED,
    RESULT_PENDING,
    DicomReceipt,
    DicomResult,
    Prediction,
    PredictionImages,
    utcnow,
)
from webapp.pacs import intake, spool, tasks
from webapp.pacs.device import device_uid
from webapp.pacs.results import BANNER, SCHEME, Verdict, build_capture, build_sr, encode, summary_lines
from webapp.pacs.sender import Destination, DestinationError, SendError, parse_destination, send


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


def test_a_disk_that_fills_mid_film_leaves_no_half_written_file(app, monkeypatch):
    """Reproduced on a 40 MB tmpfs with 40 KB left: storescu's film was answered Out of Resources and
    its first 40 KB stayed in the spool as a `.part` file (the patient's name in it) until the sweep."""
    real_open = spool.open_private

    class FillsUp:
        def __init__(self, path):
            self.handle = real_open(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "open_private", FillsUp)
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


def test_an_unreachable_redis_is_one_log_line_per_film_not_a_traceback(tmp_path):
    # The PACS keeps sending during a Redis outage (each film answered Out of Resources, sent again
    # later): the node logged a 40-line traceback for every one of them.
    import logging

    from tests.redis_server import free_port

    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    kept = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = kept.append
    intake.log.addHandler(handler)  # the app's JSON logging does not propagate to pytest's capture
    try:
        with app.app_context():
            reset_database()
            assert intake.receive(arrival(film(0))) == intake.OUT_OF_RESOURCES
            assert db.session.scalar(select(func.count()).select_from(DicomReceipt)) == 0
    finally:
        intake.log.removeHandler(handler)
    [record] = kept
    assert record.exc_info is None
    assert re.fullmatch(
        r"dicom: could not queue receipt \d+; the PACS is told to send it again: the job queue cannot be "
        r"reached \(ConnectionError: Error 111 connecting to 127\.0\.0\.1:\d+\. Connection refused\.\)",
        record.getMessage(),
    )


def test_a_database_that_fails_at_the_receipt_leaves_no_film_on_disk(app, monkeypatch):
    # SQLite locked by another writer past its timeout: the PACS is told to send the film again, so the
    # copy already spooled (the patient's name and ID in it) must go, not wait on disk for ever.
    def locked(receipt):
        raise OperationalError("INSERT INTO dicom_receipts", {}, Exception("database is locked"))

    monkeypatch.setattr(intake, "record", locked)
    with app.app_context(), pytest.raises(OperationalError):  # the listener answers Out of Resources
        intake.receive(arrival(film(0)))
    assert left_behind(app) == (0, [], 0)


def test_recovery_removes_films_and_results_no_row_names_once_abandoned(app):
    # What a listener or a worker killed between writing a file and committing its row leaves behind.
    data = film(0)
    with app.app_context():
        assert intake.receive(arrival(data)) == intake.SUCCESS  # a film named by its receipt: kept
        spool.write(spool.SPOOL, "killed-listener.dcm", data)
        spool.write(spool.OUTBOX, "7-sr.dcm", data)
        spool.write(spool.SPOOL, "just-written.dcm", data)
        old = time.time() - spool.ORPHAN_SECONDS - 60
        for kind, name in ((spool.SPOOL, "killed-listener.dcm"), (spool.OUTBOX, "7-sr.dcm")):
            os.utime(spool.folder(kind) / name, (old, old))
        named = db.session.scalar(select(DicomReceipt.spool_name))
        os.utime(spool.folder(spool.SPOOL) / named, (old, old))
        tasks.recover()
        assert sorted(p.name for p in spool.folder(spool.SPOOL).iterdir()) == sorted([named, "just-written.dcm"])
        assert list(spool.folder(spool.OUTBOX).iterdir()) == []


def test_destination_setting():
    destination = parse_destination("ORTHANC@pacs.example.org:4242")
    assert (destination.ae_title, destination.host, destination.port) == ("ORTHANC", "pacs.example.org", 4242)
    for bad in ("pacs:4242", "ORTHANC@pacs", "@pacs:4242", "ORTHANC@pacs:port", "A" * 17 + "@pacs:1", "O@pacs:99999"):
        with pytest.raises(DestinationError):
            parse_destination(bad)
    # AE titles pynetdicom refuses when it sends: accepted here, every result then failed in the outbox.
    for bad in ("OR\\THANC@pacs:4242", "ORT\tHANC@pacs:4242", "RADIOLOGÍA@pacs:4242"):
        with pytest.raises(DestinationError, match="printable ASCII"):
            parse_destination(bad)


def test_sr_holds_the_unknown_reason_and_capture_the_banner():
    source = dcmread(io.BytesIO(film(1)))
    assert source.SOPClassUID == CR_IMAGE_STORAGE
    verdict = Verdict("UNKNOWN", 0.42, 0.37, "The image does not look like a chest radiograph.", "v-test")
    texts = sr_texts(build_sr(source, verdict, DEVICE_UID))
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


@pytest.mark.parametrize(("film_value", "capture_value"), [("CHEST", "CHEST"), ("chest ", "CHEST"), ("", None)])
def test_the_capture_carries_the_films_body_part(film_value, capture_value):
    """Found by the PACS review: dciodvfy flagged every secondary capture, "Missing attribute Type 2C
    Conditional Element=<Laterality>": without the film's body part it cannot tell a chest (not
    paired) from a paired one."""
    source = dcmread(io.BytesIO(film(1)))
    source.BodyPartExamined = film_value
    verdict = Verdict("NORMAL", 0.1, 0.5, None, "v-test")
    capture = build_capture(source, verdict, np.full((64, 64), 0.5), np.zeros((8, 8)))
    assert capture.get("BodyPartExamined") == capture_value


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def dciodvfy_lines(tmp_path, dataset) -> list[str]:
    path = tmp_path / "result.dcm"
    path.write_bytes(encode(dataset))
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.mark.parametrize(
    ("anatomy", "capture_laterality"),
    [
        # A DX chest film as the DX IOD has it: coded Anatomic Region (Type 1), no Body Part Examined.
        ({"AnatomicRegionSequence": [code_item("51185008", "SCT", "Thorax")], "ImageLaterality": "U"}, None),
        # A paired part (a hand sent by a "route everything" rule): its side goes with it.
        ({"BodyPartExamined": "HAND", "ImageLaterality": "L"}, "L"),
        ({"BodyPartExamined": "HAND", "Laterality": "R"}, "R"),
    ],
)
def test_the_capture_carries_the_films_anatomy_and_passes_dciodvfy(anatomy, capture_laterality, tmp_path):
    """Found by the PACS review: a capture made from a film without Body Part Examined drew dciodvfy's
    "Missing attribute Type 2C Conditional Element=<Laterality>" even when the film named its anatomy
    as DX films must, in Anatomic Region Sequence: the capture dropped it."""
    source = dcmread(io.BytesIO(film(1)))
    del source.BodyPartExamined
    for keyword, value in anatomy.items():
        setattr(source, keyword, value)
    capture = build_capture(
        source, Verdict("NORMAL", 0.1, 0.5, None, "v-test"), np.full((64, 64), 0.5), np.zeros((8, 8))
    )
    assert capture.get("Laterality") == capture_laterality
    if "AnatomicRegionSequence" in anatomy:
        assert [item.CodeValue for item in capture.AnatomicRegionSequence] == ["51185008"]
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    assert dciodvfy_lines(tmp_path, capture) == []


def test_a_film_naming_no_anatomy_gives_a_capture_naming_none():
    # Nothing invented: not CHEST (the screening may have found no chest on it), not an empty Laterality.
    # dciodvfy flags such a capture as missing Laterality, as it flags the film itself: it reads a body
    # part it is not told as possibly paired.
    source = dcmread(io.BytesIO(film(1)))
    del source.BodyPartExamined
    source.AnatomicRegionSequence = [code_item("51185008", "SCT", "")]  # malformed: no meaning
    source.ImageLaterality = "B"
    capture = build_capture(
        source, Verdict("NORMAL", 0.1, 0.5, None, "v-test"), np.full((64, 64), 0.5), np.zeros((8, 8))
    )
    assert not {"BodyPartExamined", "AnatomicRegionSequence", "Laterality"} & set(capture.dir())


def test_the_results_pass_dciodvfy(tmp_path):
    """dicom3tools' validator on the SR and the capture, where it is installed (apt-get install dicom3tools)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    source = dcmread(io.BytesIO(film(1)))
    verdict = Verdict("PNEUMONIA", 0.9, 0.5, None, "v-test")
    results = {
        "sr": build_sr(source, verdict, DEVICE_UID),
        "sc": build_capture(source, verdict, np.full((64, 64), 0.5), np.zeros((8, 8))),
    }
    for name, dataset in results.items():
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(encode(dataset))
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (report.stdout + report.stderr).splitlines()
        assert [line for line in lines if line.startswith("Error")] == [], name
        # dciodvfy checks a Coding Scheme Designator against its own list of the standard's schemes, which
        # no private one is in, declared or not: that warning alone is expected, for the SR only.
        expected = f"Warning - Unrecognized defined term <{SCHEME}> for value 1 of attribute <Coding Scheme Designator>"
        assert [line for line in lines if line.startswith("Warning") and line != expected] == [], name


def test_the_sr_declares_its_private_coding_scheme():
    """Found by the PACS review: the SR used 99CXRSCREEN without a Coding Scheme Identification Sequence
    item (PS3.3 C.12.1.1.4), so nothing in the object said what the scheme is or who answers for it."""
    sr = build_sr(dcmread(io.BytesIO(film(1))), Verdict("NORMAL", 0.1, 0.5, None, "v-test"), DEVICE_UID)
    used = set()

    def walk(dataset):
        for element in dataset:
            if element.keyword == "CodingSchemeDesignator":
                used.add(element.value)
            elif element.VR == "SQ" and element.keyword != "CodingSchemeIdentificationSequence":
                for item in element.value:
                    walk(item)

    walk(sr)
    declared = {item.CodingSchemeDesignator: item for item in sr.CodingSchemeIdentificationSequence}
    assert {designator for designator in used if designator.startswith("99")} == {SCHEME} == set(declared)
    assert declared[SCHEME].CodingSchemeName and declared[SCHEME].CodingSchemeResponsibleOrganization == "CXR Screen"


def test_a_refused_film_sent_again_is_screened_and_a_screened_one_only_counted(app):
    data = film(0)
    damaged = data[: len(data) - 5000]  # the same instance, its pixel data cut short
    with app.app_context():
        assert intake.receive(arrival(damaged)) == intake.SUCCESS
    drain(app)
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_REFUSED
        assert db.session.scalar(select(func.count()).select_from(PredictionImages)) == 0
        assert intake.receive(arrival(data)) == intake.SUCCESS  # the re-send the refusal asked for
        receipt = db.session.scalar(select(DicomReceipt))
        assert (receipt.state, receipt.error, receipt.copies) == (RECEIPT_QUEUED, None, 2)
        assert receipt.spool_name in [p.name for p in spool.folder(spool.SPOOL).iterdir()]
    assert drain(app) == 1
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state == RECEIPT_SCREENED and receipt.prediction_id is not None
        # Stored with the prediction, in its own table: the worklist's film and heat map.
        images = receipt.prediction.images
        assert images.review_png.startswith(b"\x89PNG") and images.heatmap_png.startswith(b"\x89PNG")
        assert intake.receive(arrival(data)) == intake.SUCCESS  # a duplicate of a screened film
    assert drain(app) == 0
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert (receipt.state, receipt.copies) == (RECEIPT_SCREENED, 3)
        assert db.session.scalar(select(func.count()).select_from(Prediction)) == 1


def with_header(data: bytes, **values) -> bytes:
    """The film with header elements replaced by raw values (bytes: kept exactly as a modality wrote them)."""
    ds = dcmread(io.BytesIO(data))
    for keyword, value in values.items():
        if isinstance(value, bytes):
            ds[keyword] = DataElement(keyword, dictionary_VR(keyword), value)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "values",
    [
        {"SpecificCharacterSet": ["", "ISO 2022 IR 87"], "PatientName": "Yamada^Tarou=山田^太郎"},
        {"SpecificCharacterSet": "ISO 2022 IR 100"},
        {"SpecificCharacterSet": "ISO_IR 999"},
        {"PatientSex": "U"},
        {"PatientSex": "m"},
        {"PatientSex": "MALE"},
        {"StudyTime": b"10:10:10"},
        {"PatientBirthDate": b"1980-01-02"},
        {"PatientBirthDate": b"1980"},
        {"StudyDate": b"2026-01-01"},
    ],
)
def test_results_are_built_from_real_world_headers(values):
    source = dcmread(io.BytesIO(with_header(film(0), **values)))
    verdict = Verdict("NORMAL", 0.1, 0.5, None, "v-test")
    sr = dcmread(io.BytesIO(encode(build_sr(source, verdict, DEVICE_UID))))
    capture = encode(build_capture(source, verdict, np.full((64, 64), 0.5, np.float32), np.zeros((8, 8), np.float32)))
    assert sr.StudyInstanceUID == source.StudyInstanceUID and capture
    assert str(sr.PatientName) == str(source.PatientName)  # the film's own patient module, as it came


def test_results_carry_the_films_patient_and_study_bytes_even_in_a_wrong_character_set():
    # Found by the PACS review: a modality declaring UTF-8 (ISO_IR 192) but writing Latin-1 sent
    # "M\xfcller"; the SR and SC said "M\xef\xbf\xbdller" (U+FFFD), another name than the film's.
    names = {"PatientName": b"M\xfcller^J\xfcrgen ", "StudyDescription": b"Thorax p.a. \xdcbersicht "}
    data = with_header(film(0), SpecificCharacterSet="ISO_IR 192", **names)
    verdict = Verdict("NORMAL", 0.1, 0.5, None, "v-test")
    pixels, heatmap = np.full((64, 64), 0.5, np.float32), np.zeros((8, 8), np.float32)
    for result in (
        build_sr(dcmread(io.BytesIO(data)), verdict, DEVICE_UID),
        build_capture(dcmread(io.BytesIO(data)), verdict, pixels, heatmap),
    ):
        written = dcmread(io.BytesIO(encode(result)))
        assert written.SpecificCharacterSet == "ISO_IR 192"
        assert {keyword: written.get_item(keyword).value for keyword in names} == names


@pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")
def test_a_full_disk_at_the_outbox_makes_the_film_wait_not_lose_its_result(app, monkeypatch):
    """Reproduced with INSTANCE_DIR on a tmpfs with 100 KB free: the SR (6 KB) was written, the capture
    (152 KB) was not, and its result was marked failed for good, "The SC could not be built from the
    film (OSError)", with the film's spooled copy deleted: the PACS never got it, disk freed or not."""
    real_write = spool.write

    def full_at_the_capture(kind, name, data):
        if name.endswith("-sc.dcm"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(kind, name, data)

    monkeypatch.setattr(spool, "write", full_at_the_capture)
    with app.app_context():
        assert intake.receive(arrival(film(0))) == intake.SUCCESS
    drain(app)
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state != RECEIPT_SCREENED and receipt.spool_name and not receipt.results
        assert list(spool.folder(spool.OUTBOX).iterdir()) == []  # the SR written first went too
        db.session.execute(update(DicomReceipt).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    monkeypatch.setattr(spool, "write", real_write)  # the disk has room again
    with app.app_context():
        assert run_recoveries() == 1
    drain(app)
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state == RECEIPT_SCREENED
        assert {result.kind: result.state for result in receipt.results} == {"SR": RESULT_PENDING, "SC": RESULT_PENDING}


@pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")
def test_results_that_cannot_be_built_keep_the_prediction(app, monkeypatch, caplog):
    def strict(*args):
        raise ValueError("'1980-01-02' is not a valid date")  # what highdicom says: the value itself

    monkeypatch.setattr(tasks, "build_sr", strict)
    with app.app_context():
        assert intake.receive(arrival(film(0))) == intake.SUCCESS
    drain(app)
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state == RECEIPT_SCREENED and receipt.prediction_id is not None
        results = {result.kind: result for result in receipt.results}
        assert results["SR"].state == RESULT_FAILED and results["SR"].file_name is None
        assert "SR could not be built" in results["SR"].last_error and "1980" not in results["SR"].last_error
        assert results["SC"].state == RESULT_PENDING and results["SC"].file_name  # tried, PACS down
        assert [p.name for p in spool.folder(spool.OUTBOX).iterdir()] == [results["SC"].file_name]
    assert not [r for r in caplog.records if "1980" in r.getMessage()]


def sr_texts(sr) -> dict[str, str]:
    texts = {}

    def walk(items):
        for item in items:
            if item.ValueType == "TEXT":
                texts[item.ConceptNameCodeSequence[0].CodeMeaning] = item.TextValue
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return texts


def test_the_caution_goes_into_the_sr_and_is_burned_into_the_capture():
    source = dcmread(io.BytesIO(film(0)))
    caution = "Outside the validated age range: the DICOM header gives an age outside 1 to 5 years; take care."
    plain = Verdict("NORMAL", 0.1, 0.39, None, "v-test")
    cautioned = Verdict("NORMAL", 0.1, 0.39, None, "v-test", caution)
    assert sr_texts(build_sr(source, cautioned, DEVICE_UID))["Caution"] == caution
    assert sr_texts(build_sr(source, plain, DEVICE_UID))["Caution"] == "none"
    pixels = np.full((400, 300), 0.5, np.float32)

    def black_rows_at_the_bottom(verdict) -> int:
        rgb = build_capture(source, verdict, pixels, np.zeros((16, 16), np.float32)).pixel_array
        rows = 0
        while rgb[-1 - rows].min() == 0:  # every band row has black pixels; the grey film has none
            rows += 1
        return rows

    assert black_rows_at_the_bottom(cautioned) > 1.5 * black_rows_at_the_bottom(plain)  # a second line


@pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")
def test_a_film_from_the_pacs_with_a_childs_age_outside_the_validated_range_sends_the_caution(app):
    with app.app_context():
        assert intake.receive(arrival(with_header(film(0), PatientAge="010Y"))) == intake.SUCCESS
    drain(app)
    with app.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        prediction = db.session.get(Prediction, receipt.prediction_id)
        assert prediction.label != "UNKNOWN" and prediction.caution.startswith("Outside the validated age range")
        sr_file = {result.kind: result for result in receipt.results}["SR"].file_name
        sr = dcmread(spool.folder(spool.OUTBOX) / sr_file)
    assert sr_texts(sr)["Caution"] == prediction.caution


def test_an_unknown_films_capture_shows_its_reason_not_a_score():
    unknown = Verdict("UNKNOWN", 0.97, 0.39, "Outside the intended use: this looks like an adult's chest film.", "v")
    assert summary_lines(unknown) == ["UNKNOWN  Outside the intended use"]
    assert summary_lines(Verdict("PNEUMONIA", 0.97, 0.39, None, "v")) == [
        "PNEUMONIA  p(pneumonia) 0.97  threshold 0.390"
    ]


def test_the_job_worker_refuses_to_start_with_a_mistyped_destination(app, runner):
    """The worker sends the results: it started with any value and every result then failed in the
    outbox, retried for ever (the DICOM node alone checked the setting)."""
    app.config["DICOM_RESULTS_DESTINATION"] = "ORTHANC@pacs"
    result = runner.invoke(args=["jobs", "worker"])
    assert result.exit_code != 0
    assert "DICOM_RESULTS_DESTINATION must read AE@host:port" in result.output


@pytest.mark.parametrize(
    ("destination", "said"),
    [
        ("ORTHANC@pacs:4242", "PACS results to ORTHANC@pacs:4242"),
        (None, "PACS no results sent: DICOM_RESULTS_DESTINATION"),
    ],
)
def test_the_job_workers_ready_line_says_where_results_go(app, runner, monkeypatch, caplog, destination, said):
    """Found following docs/dicom.md literally: the node started with DICOM_RESULTS_DESTINATION logged
    "results to ORTHANC@...", while the worker, which builds and sends them, had none and built none
    without a word. The worker, the one process that sends, now says where to in its own line."""
    app.config["DICOM_RESULTS_DESTINATION"] = destination

    class Consumer:
        def run(self):
            pass

    monkeypatch.setattr("webapp.jobs.cli.install_process_logging", lambda *filters: None)
    monkeypatch.setattr("webapp.jobs.cli.yield_cpu", lambda *args: None)  # leave the test process's priority
    monkeypatch.setattr("webapp.jobs.cli.analyzer_for", lambda config: None)
    monkeypatch.setattr("huey.api.Huey.create_consumer", lambda self, **options: Consumer())
    monkeypatch.setattr("webapp.jobs.cli.exit_at_once", lambda: None)  # would end the test process
    with caplog.at_level("INFO", logger="webapp.jobs.cli"):
        result = runner.invoke(args=["jobs", "worker"])
    assert result.exit_code == 0, result.output
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("jobs worker ready")]
    assert len(ready) == 1 and said in ready[0]


def test_results_reach_a_pacs_that_takes_only_the_default_transfer_syntax():
    # Found by the PACS review: a PACS taking only Implicit VR Little Endian (the one syntax every SCP
    # must take) accepted no context for our Explicit VR results; each try failed as "cannot be reached".
    stored = []

    def on_store(event):
        stored.append(event.dataset)
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(ComprehensiveSRStorage, ImplicitVRLittleEndian)
    server = pacs.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    sr = encode(build_sr(dcmread(io.BytesIO(film(0))), Verdict("NORMAL", 0.1, 0.5, None, "v-test"), DEVICE_UID))
    try:
        send(Destination("PACS", "127.0.0.1", server.server_address[1]), "CXRSCREEN", sr)
        with pytest.raises(SendError, match="does not take Secondary Capture Image Storage objects"):
            capture = build_capture(
                dcmread(io.BytesIO(film(0))),
                Verdict("NORMAL", 0.1, 0.5, None, "v-test"),
                np.full((64, 64), 0.5, np.float32),
                np.zeros((8, 8), np.float32),
            )
            send(Destination("PACS", "127.0.0.1", server.server_address[1]), "CXRSCREEN", encode(capture))
    finally:
        server.shutdown()
    assert [str(ds.SOPInstanceUID) for ds in stored] == [str(dcmread(io.BytesIO(sr)).SOPInstanceUID)]


def test_a_pacs_that_refuses_the_association_is_reported_with_its_reason():
    # The outbox said only "refused the association": not that the PACS does not know our AE title.
    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(ComprehensiveSRStorage)
    pacs.require_calling_aet = ["SOMEONE"]
    server = pacs.start_server(("127.0.0.1", 0), block=False)
    sr = encode(build_sr(dcmread(io.BytesIO(film(0))), Verdict("NORMAL", 0.1, 0.5, None, "v-test"), DEVICE_UID))
    try:
        with pytest.raises(SendError, match=r"Calling AE title not recognised \(this node calls as CXRSCREEN\)"):
            send(Destination("PACS", "127.0.0.1", server.server_address[1]), "CXRSCREEN", sr)
    finally:
        server.shutdown()


@pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")
def test_results_of_a_film_without_a_series_uid_say_so(app):
    # Found by the PACS review: the outbox said "(KeyError)", which no administrator can act on.
    ds = dcmread(io.BytesIO(film(0)))
    del ds.SeriesInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with app.app_context():
        assert intake.receive(arrival(buffer.getvalue())) == intake.SUCCESS
    drain(app)
    with app.app_context():
        errors = {result.kind: result.last_error for result in db.session.scalar(select(DicomReceipt)).results}
    assert errors == {
        kind: f"The {kind} could not be built from the film (the film has no SeriesInstanceUID); it was not sent."
        for kind in ("SR", "SC")
    }


def test_the_capture_of_a_lossy_film_says_it_went_through_lossy_compression():
    # Found by the PACS review: the capture of a JPEG-baseline film (Lossy Image Compression 01) had no
    # Lossy Image Compression, where PS3.3 C.7.6.1.1.5 says once 01, never reset.
    verdict = Verdict("NORMAL", 0.1, 0.5, None, "v-test")
    pixels, heatmap = np.full((64, 64), 0.5, np.float32), np.zeros((8, 8), np.float32)
    lossy = dcmread(io.BytesIO(with_header(film(0), LossyImageCompression="01")))
    assert build_capture(lossy, verdict, pixels, heatmap).LossyImageCompression == "01"
    assert "LossyImageCompression" not in build_capture(dcmread(io.BytesIO(film(0))), verdict, pixels, heatmap)


def device_observer_uid(sr) -> str:
    """The Device Observer UID of the SR's observation context (TID 1004)."""
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer UID":
            return str(item.UID)
    raise AssertionError("the SR names no device observer")


@pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")
def test_the_reports_of_one_installation_name_one_device(app, tmp_path):
    """Found by the PACS review: the Device Observer UID was drawn anew for every report, so a PACS or a
    registry grouping reports by the device that made them saw a new device per film."""
    with app.app_context():
        for index in (0, 1):
            assert intake.receive(arrival(film(index))) == intake.SUCCESS
    drain(app)
    with app.app_context():
        names = db.session.scalars(select(DicomResult.file_name).where(DicomResult.kind == "SR")).all()
        uids = {device_observer_uid(dcmread(spool.folder(spool.OUTBOX) / name)) for name in names}
    assert len(names) == 2 and len(uids) == 1
    uid = uids.pop()
    # PS3.5 9.1: at most 64 characters, digits and dots, no component with a leading zero.
    assert len(uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+", uid), uid
    # The same app started again keeps it; another installation (its own instance folder) has its own.
    again = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path})
    other = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path / "other"})
    with again.app_context():
        assert device_uid() == uid
    with other.app_context():
        assert device_uid() not in (uid, "")
