"""One JSON line per request on stdout: request id, user, method, path, status, latency; nothing else."""

import io
import json

import numpy as np
import pytest

from tests.helpers import fixture_image
from tests.image_samples import PATIENT, dicom
from webapp.inference.runtime import ModelUnavailable


def request_lines(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request"]


def test_one_line_per_request_with_id_status_and_latency(client, capsys):
    capsys.readouterr()
    response = client.get("/healthz")
    (line,) = request_lines(capsys)
    assert line["method"] == "GET" and line["path"] == "/healthz" and line["status"] == 200
    assert line["user_id"] is None
    assert line["latency_ms"] >= 0
    assert line["request_id"] == response.headers["X-Request-ID"] and len(line["request_id"]) == 32
    assert line["level"] == "info" and line["time"].endswith("+00:00")


def test_incoming_request_id_is_kept(client, capsys):
    capsys.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": "proxy-4f2a.17"})
    assert response.headers["X-Request-ID"] == "proxy-4f2a.17"
    assert request_lines(capsys)[0]["request_id"] == "proxy-4f2a.17"


@pytest.mark.parametrize("hostile", ['x" , "status": 200', "a" * 200, "two words", "line\tbreak"])
def test_hostile_request_id_is_replaced(client, capsys, hostile):
    capsys.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": hostile})
    (line,) = request_lines(capsys)
    assert line["request_id"] == response.headers["X-Request-ID"] != hostile


def test_requests_turned_away_by_the_sign_in_wall_are_logged(client, capsys):
    capsys.readouterr()
    assert client.get("/history/").status_code in (302, 308)
    (line,) = request_lines(capsys)
    assert line["status"] in (302, 308) and line["user_id"] is None


def test_signed_in_user_is_named_by_id(client, auth, clinician_user, capsys):
    auth.login()
    capsys.readouterr()
    client.get("/screen")
    (line,) = request_lines(capsys)
    assert line["user_id"] == clinician_user and line["status"] == 200


def test_api_upload_logs_user_but_no_image_file_name_or_patient_fields(client, api_token, clinician_user, capsys):
    pixels = np.tile(np.linspace(0, 4000, 256, dtype=np.uint16), (256, 1))
    uploads = [
        ("Doe_Jane_MRN-0042-SECRET.dcm", dicom(pixels, bits_stored=12)),
        ("patient-photo.jpeg", fixture_image("normal.jpeg")),
    ]
    capsys.readouterr()
    for name, data in uploads:
        client.post(
            "/api/v1/predictions",
            headers={"Authorization": f"Bearer {api_token}"},
            data={"file": (io.BytesIO(data), name)},
            content_type="multipart/form-data",
        )
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert [r["path"] for r in requests] == ["/api/v1/predictions"] * 2
    assert all(r["user_id"] == clinician_user and r["bytes_in"] > 0 for r in requests)
    for secret in [*PATIENT.values(), "Doe_Jane", "patient-photo", "Doe^Jane"]:
        assert secret not in out
    assert "JFIF" not in out  # no image bytes either


@pytest.mark.parametrize(
    "failure, status, level",
    [
        pytest.param(RuntimeError("an unexpected failure"), 500, "error", id="server_error_at_error_level"),
        pytest.param(ModelUnavailable("model could not be loaded from x"), 503, "warning", id="unavailable_a_warning"),
    ],
)
def test_level_of_a_failed_request(client, capsys, monkeypatch, failure, status, level):
    def failing(_config):
        raise failure

    monkeypatch.setattr("webapp.health.routes.analyzer_for", failing)
    capsys.readouterr()
    assert client.get("/readyz").status_code == status
    request_line = request_lines(capsys)[0]
    assert request_line["status"] == status and request_line["level"] == level


@pytest.fixture
def process_logging():
    """install_process_logging() as the job worker and DICOM node call it, undone after the test."""
    import logging

    from webapp.logs import install_json_logging, install_process_logging

    root = logging.getLogger()
    own = [logging.getLogger(name) for name in ("webapp", "flask-limiter")]
    handlers, level, propagate = list(root.handlers), root.level, [logger.propagate for logger in own]
    install_json_logging("flask-limiter")  # as the app's rate limits do
    install_process_logging()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger, was in zip(own, propagate, strict=True):
        logger.propagate = was


def test_worker_and_node_log_each_line_once_as_json(process_logging, capsys):
    """The job worker and DICOM node wrote every app line twice (JSON on stdout, plain text on
    stderr through logging.basicConfig), and the libraries' lines as plain text only."""
    import logging

    capsys.readouterr()
    logging.getLogger("webapp.jobs.cli").info("jobs worker ready")
    logging.getLogger("huey.consumer").info("Huey consumer started")
    logging.getLogger("pynetdicom.assoc").debug("below INFO: not written")
    logging.getLogger("flask-limiter").warning("Rate limit storage unreachable")
    written = capsys.readouterr()
    lines = [json.loads(line) for line in written.out.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("webapp.jobs.cli", "jobs worker ready"),
        ("huey.consumer", "Huey consumer started"),
        ("flask-limiter", "Rate limit storage unreachable"),
    ]
    assert written.err == ""
