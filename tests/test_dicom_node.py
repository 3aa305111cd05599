"""The DICOM node against a real PACS: Orthanc started on loopback ports plays the PACS, films go in by
C-STORE (pynetdicom), the queue's jobs run in this process (as a worker thread would run them), and the
results are read back through Orthanc's REST API and parsed with pydicom.

Timings (60 s for 8 films, 10 s when idle, an outage of minutes) are measured by the named check
scripts/check_dicom_node.py with separate processes; these tests check what happens, not how fast.
"""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select, update

from tests.dicom_films import MODALITY_AE, association, echo, film, identifiers, store
from tests.factories import add_prediction
from tests.helpers import PASSWORDS, csrf_token, drain, issue_token, make_user, reset_database
from tests.orthanc_server import orthanc_server  # noqa: F401  (session fixture)
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.jobs.queue import run_recoveries
from webapp.models import (
    RECEIPT_QUEUED,
    RECEIPT_REFUSED,
    RECEIPT_SCREENED,
    RECEIPT_SKIPPED,
    RESULT_PENDING,
    RESULT_SENT,
    DicomReceipt,
    DicomResult,
    Prediction,
    as_utc,
    utcnow,
)
from webapp.pacs import listener, tasks

VERDICT_MEANING = "AI screening verdict"


@pytest.fixture
def node(tmp_path, orthanc_server):  # noqa: F811
    """The app on a SQLite file in its own instance folder, its DICOM node listening, Orthanc emptied."""
    app = create_app(
        TestingConfig,
        {
            "INSTANCE_DIR": tmp_path,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'cxr.sqlite'}",
            "DICOM_PORT": orthanc_server.node_port,
            "DICOM_ALLOWED_CALLING_AETS": (MODALITY_AE, "ORTHANC"),
            "DICOM_RESULTS_DESTINATION": orthanc_server.destination,
        },
    )
    with app.app_context():
        reset_database()
    make_user(app, "admin", "admin")
    make_user(app, "clin", "clinician")
    app.token = issue_token(app, "clin")
    orthanc_server.clear()
    server = listener.start(app)
    yield app
    server.shutdown()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def text_items(items) -> dict[str, str]:
    """Every TEXT content item of an SR tree, by concept name."""
    found = {}
    for item in items:
        if item.ValueType == "TEXT":
            found[item.ConceptNameCodeSequence[0].CodeMeaning] = item.TextValue
        if "ContentSequence" in item:
            found.update(text_items(item.ContentSequence))
    return found


def referenced_instances(items) -> set[str]:
    found = set()
    for item in items:
        if item.ValueType == "IMAGE":
            found.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        if "ContentSequence" in item:
            found |= referenced_instances(item.ContentSequence)
    return found


def api_label(app, data: bytes) -> str:
    response = app.test_client().post(
        "/api/v1/predictions",
        headers={"Authorization": f"Bearer {app.token}"},
        data={"file": (io.BytesIO(data), "film.dcm")},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["predictions"][0]["label"]


def test_echo_from_an_allowed_ae_and_refusal_of_others(node):
    port = node.config["DICOM_PORT"]
    assert echo(port, MODALITY_AE) == 0x0000
    assert echo(port, "STRANGER") is None  # rejected at association


def test_a_modality_may_send_a_film_in_large_pieces(node):
    # An 8 MB film in 16 KiB PDUs (pynetdicom's default) is ~510 trips through its polling loops.
    assoc = association(node.config["DICOM_PORT"])
    assert assoc.is_established
    try:
        assert assoc.acceptor.maximum_length >= 1024 * 1024
        assert assoc.send_c_store(dcmread(io.BytesIO(film(0)))).Status == 0x0000
    finally:
        assoc.release()


def test_films_come_back_as_sr_and_secondary_capture_in_their_studies(node, orthanc_server, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    films = [film(i) for i in range(4)]
    assert store(node.config["DICOM_PORT"], films) == [0x0000] * 4
    assert count(node, DicomReceipt, DicomReceipt.state == RECEIPT_QUEUED) == 4
    assert drain(node) >= 4  # four screenings, each delivering its two results
    assert count(node, DicomResult, DicomResult.state == RESULT_SENT) == 8

    results = orthanc_server.datasets()
    assert len(results) == 8
    for data in films:
        source = dcmread(io.BytesIO(data))
        mine = [ds for ds in results if ds.StudyInstanceUID == source.StudyInstanceUID]
        assert sorted(ds.Modality for ds in mine) == ["OT", "SR"]
        sr = next(ds for ds in mine if ds.Modality == "SR")
        capture = next(ds for ds in mine if ds.Modality == "OT")
        for result in (sr, capture):
            assert result.SeriesInstanceUID != source.SeriesInstanceUID  # a new series of the same study
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID"):
                assert result[keyword].value == source[keyword].value, keyword
        assert sr.SeriesInstanceUID != capture.SeriesInstanceUID
        texts = text_items(sr.ContentSequence)
        assert texts[VERDICT_MEANING] == api_label(node, data)
        assert texts["Model version"] and texts["Intended use"].startswith("Intended use")
        assert "Reason for UNKNOWN" in texts
        assert str(source.SOPInstanceUID) in referenced_instances(sr.ContentSequence)
        assert capture.BurnedInAnnotation == "YES"
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert capture.pixel_array.shape[-1] == 3

    # Nothing identifying kept: not in the database, not in any file of the instance folder, not in the logs.
    instance = Path(node.config["INSTANCE_DIR"])
    assert not list((instance / "dicom" / "spool").iterdir())
    assert not list((instance / "dicom" / "outbox").iterdir())
    with node.app_context():
        db.session.remove()
        db.engine.dispose()
    secrets = {value for data in films for value in identifiers(data)}
    for path in instance.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaked = [value for value in secrets if value.encode() in content]
            assert not leaked, f"{path.name} holds {leaked}"
    logged = caplog.text
    assert not [line for line in logged.splitlines() if any(value in line for value in secrets)]
    with node.app_context():
        sources = db.session.scalars(select(Prediction.source)).all()
    assert sorted(sources) == ["api"] * 4 + ["dicom"] * 4


def test_the_same_instance_twice_is_screened_once_and_other_kinds_are_skipped(node):
    port = node.config["DICOM_PORT"]
    one, mr = film(0), film(1, modality="MR")
    assert store(port, [one, one, mr]) == [0x0000] * 3
    assert store(port, [one, mr]) == [0x0000] * 2
    assert count(node, DicomReceipt) == 2
    assert count(node, DicomReceipt, DicomReceipt.state == RECEIPT_SKIPPED) == 1
    with node.app_context():
        copies = db.session.scalar(select(DicomReceipt.copies).where(DicomReceipt.state == RECEIPT_QUEUED))
    assert copies == 3
    drain(node)
    assert count(node, Prediction) == 1
    assert count(node, DicomResult) == 2


def test_a_film_held_by_a_dead_worker_is_screened_once(node):
    assert store(node.config["DICOM_PORT"], [film(2)]) == [0x0000]
    with node.app_context():
        receipt_id = db.session.scalar(select(DicomReceipt.id))
        # A worker took the film and died: its lease is still running.
        assert tasks.claim(receipt_id, "dead-worker")
    drain(node)  # the queued message finds the film held: it looks again once the lease would lapse
    assert count(node, Prediction) == 0
    with node.app_context():
        db.session.execute(update(DicomReceipt).values(lease_until=utcnow() - timedelta(seconds=1)))  # the lease lapses
        db.session.commit()
        assert run_recoveries() >= 1
    drain(node)
    with node.app_context():
        assert run_recoveries(on_start=True) == 0  # a new worker starting finds nothing left to do
    drain(node)
    assert count(node, Prediction) == 1
    assert count(node, DicomReceipt, DicomReceipt.state == RECEIPT_SCREENED) == 1
    assert count(node, DicomResult, DicomResult.state == RESULT_SENT) == 2


def test_a_busy_database_delays_a_film_and_never_refuses_it(node, monkeypatch):
    """SQLite locked by another writer (or the database briefly away) is not the film's fault."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    assert store(node.config["DICOM_PORT"], [film(1)]) == [0x0000]
    real_process = tasks.process

    def locked(*args):
        raise OperationalError("INSERT INTO predictions ...", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(tasks, "process", locked)
    drain(node)
    with node.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state != RECEIPT_REFUSED and receipt.error is None and receipt.spool_name
        db.session.execute(update(DicomReceipt).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    monkeypatch.setattr(tasks, "process", real_process)
    with node.app_context():
        assert run_recoveries() >= 1
    drain(node)
    assert count(node, DicomReceipt, DicomReceipt.state == RECEIPT_SCREENED) == 1
    assert count(node, Prediction) == 1


def test_results_wait_for_a_pacs_that_is_down_then_arrive(node, orthanc_server):  # noqa: F811
    orthanc_server.stop()
    try:
        assert store(node.config["DICOM_PORT"], [film(3)]) == [0x0000]
        drain(node)
        with node.app_context():
            pending = db.session.scalars(select(DicomResult)).all()
            assert [r.state for r in pending] == [RESULT_PENDING] * 2
            assert all(r.attempts == 1 and "cannot be reached" in r.last_error for r in pending)
            assert all(as_utc(r.next_attempt_at) > utcnow() for r in pending)
        client = node.test_client()
        client.post(
            "/auth/login",
            data={"username": "admin", "password": PASSWORDS["admin"], "csrf_token": csrf_token(client, "/auth/login")},
        )
        page = client.get("/admin/dicom/outbox").get_data(as_text=True)
        assert "pending" in page and "cannot be reached" in page
    finally:
        orthanc_server.start()
    with node.app_context():
        # The back-off has run out (as time would make it): the next try delivers.
        db.session.execute(update(DicomResult).values(next_attempt_at=utcnow()))
        db.session.commit()
        for result_id in db.session.scalars(select(DicomResult.id)).all():
            tasks.deliver(result_id)
    assert count(node, DicomResult, DicomResult.state == RESULT_SENT) == 2
    assert len(orthanc_server.instance_ids()) == 2
    assert not list((Path(node.config["INSTANCE_DIR"]) / "dicom" / "outbox").iterdir())


def test_a_film_the_pipeline_refuses_is_recorded_and_not_kept(node):
    data = film(0)
    damaged = data[: len(data) - 5000]  # pixel data cut short
    assert store(node.config["DICOM_PORT"], [damaged]) == [0x0000]
    drain(node)
    with node.app_context():
        receipt = db.session.scalar(select(DicomReceipt))
        assert receipt.state == RECEIPT_REFUSED and receipt.error and receipt.spool_name is None
    assert count(node, Prediction) == 0 and count(node, DicomResult) == 0
    assert not list((Path(node.config["INSTANCE_DIR"]) / "dicom" / "spool").iterdir())


def login(client, username):
    return client.post(
        "/auth/login",
        data={"username": username, "password": PASSWORDS[username], "csrf_token": csrf_token(client, "/auth/login")},
    )


def test_worklist_triage_order_and_read_state(app, client, clinician_user, other_clinician):
    with app.app_context():
        ids = {
            "normal": add_prediction(None, "NORMAL", source="dicom", filename="pacs-1.dcm"),
            "unknown": add_prediction(None, "UNKNOWN", source="dicom", filename="pacs-2.dcm"),
            "likely": add_prediction(None, "PNEUMONIA", source="dicom", p_pneumonia=0.95, filename="pacs-3.dcm"),
            "less": add_prediction(None, "PNEUMONIA", source="dicom", p_pneumonia=0.7, filename="pacs-4.dcm"),
            "upload": add_prediction(clinician_user, "PNEUMONIA", filename="mine.jpeg"),
            "old": add_prediction(None, "PNEUMONIA", when=utcnow() - timedelta(hours=30), source="dicom"),
        }
    login(client, "clin")
    page = client.get("/worklist").get_data(as_text=True)
    assert 'http-equiv="refresh"' in page
    order = [f'/worklist/{ids[k]}"' for k in ("likely", "less", "unknown", "normal")]
    positions = [page.index(link) for link in order]
    assert positions == sorted(positions)
    assert f'/worklist/{ids["upload"]}"' not in page and f'/worklist/{ids["old"]}"' not in page
    assert page.count("<strong>unread</strong>") == 4
    opened = client.get(f"/worklist/{ids['likely']}", headers=FROM_THE_WORKLIST)
    assert opened.status_code == 302 and opened.headers["Location"].endswith(f"/predictions/{ids['likely']}")
    assert client.get(opened.headers["Location"]).status_code == 200  # the usual result page, with feedback
    assert client.get("/worklist").get_data(as_text=True).count("<strong>unread</strong>") == 3
    other = app.test_client()
    login(other, "other")
    assert other.get("/worklist").get_data(as_text=True).count("<strong>unread</strong>") == 4


# What a browser sends with a click on the worklist's link (Fetch Metadata; Referrer-Policy same-origin).
FROM_THE_WORKLIST = {"Sec-Fetch-Site": "same-origin", "Referer": "http://localhost/worklist"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"},
        {"Sec-Fetch-Site": "same-site", "Referer": "https://wiki.hospital.example/"},
        {"Referer": "https://evil.example/"},  # a browser without Fetch Metadata
        {},  # nor a Referer: nothing says the reader's own click sent it
    ],
)
def test_another_site_cannot_mark_films_read(app, client, clinician_user, headers):
    # A page elsewhere that sends the reader's browser to /worklist/<id> (a link, or a window it opens and
    # walks through the ids) marked those films read for them: the worklist's one triage signal, gone
    # from films nobody looked at. The film still opens; only the reader's own click marks it read.
    with app.app_context():
        film_id = add_prediction(None, "PNEUMONIA", source="dicom", filename="pacs-7.dcm")
    login(client, "clin")
    opened = client.get(f"/worklist/{film_id}", headers=headers)
    assert opened.status_code == 302 and opened.headers["Location"].endswith(f"/predictions/{film_id}")
    assert client.get("/worklist").get_data(as_text=True).count("<strong>unread</strong>") == 1
    client.get(f"/worklist/{film_id}", headers={"Sec-Fetch-Site": "none"})  # typed or bookmarked by the reader
    assert "<strong>unread</strong>" not in client.get("/worklist").get_data(as_text=True)


def test_history_and_api_filter_by_source(app, client, admin_user, admin_token, clinician_user):
    with app.app_context():
        add_prediction(clinician_user, "NORMAL", filename="by-page.jpeg")
        add_prediction(None, "PNEUMONIA", source="dicom", filename="pacs-9.dcm")
    response = client.get("/api/v1/predictions?source=dicom", headers={"Authorization": f"Bearer {admin_token}"})
    items = response.get_json()["predictions"]
    assert [(p["filename"], p["source"], p["user"]) for p in items] == [("pacs-9.dcm", "dicom", "PACS")]
    assert (
        client.get("/api/v1/predictions?source=fax", headers={"Authorization": f"Bearer {admin_token}"}).status_code
        == 400
    )
    login(client, "admin")
    page = client.get("/admin/history?source=upload").get_data(as_text=True)
    assert "by-page.jpeg" in page and "pacs-9.dcm" not in page


def test_outbox_is_for_admins(app, client, clinician_user):
    login(client, "clin")
    assert client.get("/admin/dicom/outbox").status_code == 403


def test_worklist_shows_no_pneumonia_probability_for_unknown(app, client, clinician_user):
    """An UNKNOWN answer makes no claim about pneumonia (docs/reading-view.md): the history says
    "n/a", but the worklist printed the model's raw score, e.g. 0.96 beside an adult's film."""
    with app.app_context():
        add_prediction(None, "UNKNOWN", source="dicom", p_pneumonia=0.96, filename="adult.dcm")
        add_prediction(None, "PNEUMONIA", source="dicom", p_pneumonia=0.91, filename="child.dcm")
    login(client, "clin")
    page = client.get("/worklist").get_data(as_text=True)
    assert "0.96" not in page and "n/a" in page and "0.91" in page


def test_outbox_lists_refused_films_with_their_reason(app, client, admin_user):
    """Found by the PACS review: a refused film (1 pixel wide, no pixel data...) has no prediction and
    no result, and the outbox showed only "refused 1": its reason was in the worker's log alone."""
    with app.app_context():
        db.session.add(
            DicomReceipt(
                sop_key="a" * 64,
                study_key="b" * 64,
                calling_aet="MODALITY",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                modality="DX",
                state=RECEIPT_REFUSED,
                error="too_small: The image is 500x1 pixels; at least 32 pixels on each side are needed.",
            )
        )
        db.session.commit()
    login(client, "admin")
    page = client.get("/admin/dicom/outbox").get_data(as_text=True)
    assert "The image is 500x1 pixels; at least 32 pixels on each side are needed." in page
    assert "MODALITY" in page
