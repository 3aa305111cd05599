import csv
import io
import threading

import pytest
from sqlalchemy import event, select

from tests.factories import add_prediction
from tests.helpers import api_upload, fixture_image, issue_token, post_without_length
from webapp.api.schemas import ResponseSchema
from webapp.extensions import db
from webapp.inference import analyzer
from webapp.models import LABELS, AuditEvent, Prediction
from webapp.screening import review_copy


def count(app):
    with app.app_context():
        return db.session.query(Prediction).count()


@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer wrong-token", "Basic abc", "bearer"])
def test_requests_without_a_valid_token_get_401(client, api_token, header):
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (
        ("post", "/api/v1/predictions"),
        ("get", "/api/v1/predictions"),
        ("get", "/api/v1/predictions/1"),
        ("get", "/api/v1/openapi.json"),
    ):
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Authorization": "bearer {t}"}, 200),
        ({"Authorization": "BEARER   {t}  "}, 200),
        ({"Authorization": "Bearer {t}, Bearer {t}"}, 401),  # how two Authorization headers arrive
        ({"Cookie": "token={t}; access_token={t}"}, 401),
    ],
)
def test_the_forms_of_a_token_docs_api_describes(client, api_token, headers, status):
    headers = {name: value.format(t=api_token) for name, value in headers.items()}
    response = client.get("/api/v1/tokens", headers=headers)
    assert response.status_code == status and response.is_json
    assert client.get(f"/api/v1/tokens?access_token={api_token}").status_code == 401


def test_options_needs_no_token_and_grants_no_other_origin(client):
    preflight = {"Origin": "https://ris.example", "Access-Control-Request-Method": "POST"}
    response = client.options("/api/v1/predictions", headers=preflight)
    assert response.status_code == 200 and set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert not any(name.lower().startswith("access-control-") for name, _ in response.headers)


def test_one_upload(app, client, api_token):
    response = api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))
    assert response.status_code == 201
    (item,) = response.json["predictions"]
    assert set(item) >= {"id", "filename", "label", "probabilities", "unknown_reason", "model_version", "created_at"}
    assert item["filename"] == "normal.jpeg" and item["label"] in ("NORMAL", "PNEUMONIA", "UNKNOWN")
    assert abs(sum(item["probabilities"].values()) - 1) < 1e-4
    assert item["created_at"].endswith("Z")
    assert count(app) == 1


def test_an_upload_runs_four_statements(app, client, api_token):
    # The request path's database work (docs/serving.md): the token lookup, the row, its images (a
    # table of their own), its neutral name. A new film has no reading yet: no look-up for one.
    api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))  # notes the token's first use
    statements = []

    def note(conn, cursor, statement, *args):
        statement = " ".join(statement.split()).upper()
        if "FROM SITE_CALIBRATIONS" not in statement:  # read every few seconds, not per upload (site_threshold.py)
            statements.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", note)
        try:
            response = api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
    assert response.status_code == 201 and "feedback" not in response.json["predictions"][0]
    token_lookup, insert, images, name = statements
    assert "FROM API_TOKENS" in token_lookup and token_lookup.startswith("SELECT"), statements
    assert insert.startswith("INSERT INTO PREDICTIONS "), statements
    assert images.startswith("INSERT INTO PREDICTION_IMAGES "), statements
    assert name.startswith("UPDATE PREDICTIONS SET FILENAME"), statements


def test_an_upload_answer_builds_no_schema(app, client, api_token, monkeypatch):
    # Found by profiling an upload (5 December): each answered file built a PredictionSchema (and its
    # nested schemas at the dump), copying every declared field: 0.14 ms a file, against 0.03 ms for the dump.
    files = [("normal.jpeg", fixture_image("normal.jpeg")), ("notes.pdf", b"%PDF-1.4\n%")]
    api_upload(client, api_token, *files)  # a first dump builds the nested schemas
    built = []
    init = ResponseSchema.__init__

    def counted(self, *args, **kwargs):
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(ResponseSchema, "__init__", counted)
    response = api_upload(client, api_token, *files)
    assert response.status_code == 207 and response.json["predictions"][0]["label"] in LABELS
    assert response.json["predictions"][1]["error"]["code"] and built == []


def test_the_review_copy_is_made_while_the_model_runs(app, client, api_token, monkeypatch):
    # Found by profiling the 224 px upload (5 December): the request thread handed the film to the
    # inference thread, waited for the answer, and only then made the review copy's PNG (about 1 ms),
    # which needs the pixels, not the answer. Here the forward pass starts only once the copy is made.
    api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))  # the model loaded
    copied, waited = threading.Event(), []
    at_upload, preprocess = review_copy.at_upload, analyzer.preprocess

    def copy(*args, **kwargs):
        made = at_upload(*args, **kwargs)
        copied.set()
        return made

    def after_the_copy(pixels, size):
        waited.append(copied.wait(timeout=5))
        return preprocess(pixels, size)

    monkeypatch.setattr(review_copy, "at_upload", copy)
    monkeypatch.setattr(analyzer, "preprocess", after_the_copy)
    response = api_upload(client, api_token, ("normal.jpeg", fixture_image("normal.jpeg")))
    assert response.status_code == 201 and waited == [True]


def test_batch_with_a_rejected_item(app, client, api_token):
    response = api_upload(
        client,
        api_token,
        ("normal.jpeg", fixture_image("normal.jpeg")),
        ("notes.pdf", b"%PDF-1.4\n%"),
        ("pneumonia.jpeg", fixture_image("pneumonia.jpeg")),
    )
    assert response.status_code == 207
    ok1, bad, ok2 = response.json["predictions"]
    assert "id" in ok1 and "id" in ok2
    assert bad["filename"] == "notes.pdf" and bad["error"]["code"] and bad["error"]["message"]
    assert 400 <= bad["status"] < 500
    assert count(app) == 2


def test_a_fault_with_one_file_costs_the_others_nothing(app, client, api_token, monkeypatch):
    """A file that trips an error no check foresaw is refused alone: the files before it keep their
    answers (their rows are committed), the files after it are still screened."""
    from webapp.screening import service

    real_decode = service.decode

    def decode(data, **kwargs):
        if data.startswith(b"BOOM"):
            raise ValueError("'list' argument must have no negative elements")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(service, "decode", decode)
    normal, pneumonia = fixture_image("normal.jpeg"), fixture_image("pneumonia.jpeg")
    response = api_upload(client, api_token, ("a.jpeg", normal), ("b.dcm", b"BOOM"), ("c.jpeg", pneumonia))
    assert response.status_code == 207
    first, failed, last = response.json["predictions"]
    assert "id" in first and "id" in last
    assert failed["status"] == 500 and failed["error"]["code"] == "screening_failed"
    assert "error on our side" in failed["error"]["message"] and "Traceback" not in response.get_data(as_text=True)
    assert count(app) == 2


def test_rejected_single_file(app, client, api_token):
    response = api_upload(client, api_token, ("empty.jpeg", b""))
    assert 400 <= response.status_code < 500
    assert set(response.json["error"]) == {"code", "message"}
    assert count(app) == 0


def test_all_rejected_batch(app, client, api_token):
    response = api_upload(client, api_token, ("a.jpeg", b""), ("b.txt", b"text"))
    assert 400 <= response.status_code < 500
    assert response.json["error"]["code"] == "all_files_rejected"
    assert len(response.json["predictions"]) == 2 and count(app) == 0


def test_missing_file_field(client, api_token):
    response = client.post("/api/v1/predictions", headers={"Authorization": f"Bearer {api_token}"}, data={})
    assert response.status_code == 400 and response.json["error"]["code"] == "no_file"


@pytest.mark.parametrize(
    "disposition, boundary",
    [
        ('form-data; name="file"; filename="\u00e9l\u00e8ve.jpg"'.encode("latin-1"), "XyZ"),  # raw Latin-1 name
        (b'form-data; name="file"; filename="a.jpg"', "Other"),  # a boundary the body does not use
    ],
)
def test_a_multipart_body_that_cannot_be_read_is_not_called_a_missing_filename(
    app, client, api_token, disposition, boundary
):
    # werkzeug drops such a body silently: the answer said "a part without a filename", which it had.
    body = b"--XyZ\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: image/jpeg\r\n\r\n"
    body += fixture_image("normal.jpeg") + b"\r\n--XyZ--\r\n"
    response = client.post(
        "/api/v1/predictions",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code == 400 and response.json["error"]["code"] == "no_file"
    assert "No part could be read" in response.json["error"]["message"]
    assert count(app) == 0


def test_a_body_without_a_length_is_told_so(app, client, api_token):
    # Found sending a hand-built request to the live server: the body is read as empty (RFC 9112 6.3),
    # and the answer blamed the boundary, which was right.
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpeg"\r\n\r\n'
    body += fixture_image("normal.jpeg") + b"\r\n--XyZ--\r\n"
    headers = {"Authorization": f"Bearer {api_token}"}
    response = post_without_length(client, "/api/v1/predictions", body, "multipart/form-data; boundary=XyZ", headers)
    assert response.status_code == 400 and response.json["error"]["code"] == "no_file"
    message = response.json["error"]["message"]
    assert "neither a Content-Length nor Transfer-Encoding: chunked" in message and "boundary" not in message
    assert count(app) == 0


def test_a_filename_in_rfc_5987_form_is_read(client, api_token):
    body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%C3%A9l%C3%A8ve.jpeg\r\n\r\n"
    body += fixture_image("normal.jpeg") + b"\r\n--XyZ--\r\n"
    response = client.post(
        "/api/v1/predictions",
        data=body,
        content_type="multipart/form-data; boundary=XyZ",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code == 201 and response.json["predictions"][0]["filename"] == "\u00e9l\u00e8ve.jpeg"


def test_file_name_is_sanitized(client, api_token):
    response = api_upload(client, api_token, ("../../etc/pa\x00ss<b>.jpeg", fixture_image("normal.jpeg")))
    name = response.json["predictions"][0]["filename"]
    assert "/" not in name and "\x00" not in name and name.endswith(".jpeg")


def test_too_large_is_413_json(app, client, api_token):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = api_upload(client, api_token, ("n.jpeg", fixture_image("normal.jpeg")))
    assert response.status_code == 413 and response.json["error"]["code"] == "too_large"


def test_too_many_form_parts_is_not_called_too_large(client, api_token):
    """werkzeug answers 413 for more than 1000 form parts too: the message must not blame the size."""
    parts = "".join(f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(1100))
    response = client.post(
        "/api/v1/predictions",
        data=(parts + "--b--\r\n").encode(),
        headers={"Authorization": f"Bearer {api_token}", "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    message = response.json["error"]["message"]
    assert "too many parts" in message and "MB" not in message


def test_get_own_other_and_missing(app, client, api_token, clinician_user, other_clinician):
    with app.app_context():
        mine = add_prediction(clinician_user)
        theirs = add_prediction(other_clinician)
        from_the_pacs = add_prediction(None, source="dicom")  # on every clinician's worklist (docs/api.md)
    headers = {"Authorization": f"Bearer {api_token}"}
    assert client.get(f"/api/v1/predictions/{mine}", headers=headers).json["id"] == mine
    assert client.get(f"/api/v1/predictions/{from_the_pacs}", headers=headers).json["user"] == "PACS"
    assert client.get(f"/api/v1/predictions/{theirs}", headers=headers).status_code == 403
    assert client.get("/api/v1/predictions/999", headers=headers).json["error"]["code"] == "not_found"
    with app.app_context():
        refused = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "prediction_view_refused")).all()
        assert [(e.actor, e.target, e.details) for e in refused] == [("clin", f"prediction {theirs}", "api")]


def test_scores_and_the_threshold_they_meet_come_to_the_same_places(app, client, auth, admin_token, clinician_user):
    """The answer gave the probabilities to 6 places but the threshold in full (the card's is
    0.3866968637933607), and the history CSV gave all of them to 4: one rule now, inference/scores.py."""
    with app.app_context():
        row = db.session.get(Prediction, add_prediction(clinician_user, "NORMAL", p_pneumonia=0.123456789))
        row.threshold = 0.3866968637933607
        db.session.commit()
        prediction_id = row.id
    answer = client.get(f"/api/v1/predictions/{prediction_id}", headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.json["threshold"] == 0.386697 and answer.json["probabilities"]["PNEUMONIA"] == 0.123457
    auth.login("admin")
    (exported,) = csv.DictReader(io.StringIO(client.get("/admin/history.csv").get_data(as_text=True)))
    assert [exported[c] for c in ("p_normal", "p_pneumonia", "threshold", "raw_p_pneumonia")] == [
        "0.876543",
        "0.123457",
        "0.386697",
        "0.123457",
    ]


def test_list_is_for_admins(client, api_token):
    response = client.get("/api/v1/predictions", headers={"Authorization": f"Bearer {api_token}"})
    assert response.status_code == 403


def test_admin_list_with_filters_and_pages(app, client, admin_token, clinician_user):
    with app.app_context():
        for _ in range(3):
            add_prediction(clinician_user, "PNEUMONIA")
        add_prediction(clinician_user, "NORMAL", feedback="NORMAL")
    headers = {"Authorization": f"Bearer {admin_token}"}
    body = client.get("/api/v1/predictions?verdict=PNEUMONIA&per_page=2", headers=headers).json
    assert body["total"] == 3 and body["pages"] == 2 and len(body["predictions"]) == 2
    assert {p["label"] for p in body["predictions"]} == {"PNEUMONIA"}
    reviewed = client.get("/api/v1/predictions?reviewed=yes", headers=headers).json
    assert reviewed["total"] == 1 and reviewed["predictions"][0]["feedback"]["label"] == "NORMAL"
    bad = client.get("/api/v1/predictions?date_from=soon", headers=headers)
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_filter"


def test_the_user_filter_finds_rows_by_the_user_they_show(app, client, admin_token, clinician_user):
    """A PACS film's `user` is "PACS", yet `user=PACS` found nothing (it has no account to join)."""
    with app.app_context():
        mine = add_prediction(clinician_user)
        from_the_pacs = add_prediction(None, source="dicom")
    headers = {"Authorization": f"Bearer {admin_token}"}
    for name, expected in (("PACS", from_the_pacs), ("clin", mine)):
        rows = client.get(f"/api/v1/predictions?user={name}", headers=headers).json["predictions"]
        assert [(row["id"], row["user"]) for row in rows] == [(expected, name)]
    assert client.get("/api/v1/predictions?user=nobody", headers=headers).json["total"] == 0
    # Names are compared as accounts are (none can differ from another only in case or full-width
    # letters): "pacs" and "CLIN" found nothing.
    for typed, expected in (("pacs", from_the_pacs), ("CLIN", mine), ("\uff43lin", mine)):
        rows = client.get(f"/api/v1/predictions?user={typed}", headers=headers).json["predictions"]
        assert [row["id"] for row in rows] == [expected], typed


def test_deactivated_users_token_stops_working(app, client, api_token, runner):
    runner.invoke(args=["users", "deactivate", "clin"])
    assert api_upload(client, api_token, ("n.jpeg", fixture_image("normal.jpeg"))).status_code == 401


def test_openapi_document(client, api_token):
    doc = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {api_token}"}).json
    assert doc["openapi"].startswith("3.")
    assert {"post", "get"} <= set(doc["paths"]["/predictions"])
    assert "/predictions/{id}" in doc["paths"]


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404 and response.json["error"]["code"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1//predictions/1"),
        ("GET", "/api//v1/tokens"),
        ("POST", "/api/v1//predictions"),
        ("DELETE", "/api/v1//tokens/1"),
    ],
)
def test_an_api_path_with_an_empty_segment_is_a_json_404_not_an_html_redirect(client, api_token, method, path):
    # werkzeug merged the slashes and answered 308 with an HTML page: a script re-sent its upload.
    response = client.open(path, method=method, headers={"Authorization": f"Bearer {api_token}"})
    assert response.status_code == 404 and response.is_json and response.json["error"]["code"] == "not_found"
    assert "Location" not in response.headers


def test_second_token_for_admin(app, admin_user):
    assert issue_token(app, "admin") != issue_token(app, "admin")


def test_the_openapi_document_says_what_threshold_and_unknown_probabilities_mean(client, api_token):
    # The threshold's description was a fragment ("PNEUMONIA probability at or above which") that also
    # left out the uncertainty band, and nothing told a client that an UNKNOWN answer's probabilities
    # are no reading of the image (the page folds them away, the history CSV leaves them empty).
    doc = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {api_token}"}).json
    fields = doc["components"]["schemas"]["Prediction"]["properties"]
    threshold = fields["threshold"]["description"]
    assert "uncertainty band" in threshold and "UNKNOWN" in threshold
    assert "not a reading of the image" in fields["probabilities"]["description"]
