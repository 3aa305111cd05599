import hashlib
import io
import threading

import pytest
from PIL import Image
from sqlalchemy import delete, event, select

from tests.factories import add_prediction
from tests.helpers import (
    PASSWORDS,
    csrf_token,
    fixture_image,
    in_parallel,
    make_user,
    post_without_length,
    threadable_app,
)
from webapp.extensions import db
from webapp.models import LABELS, AuditEvent, Feedback, Prediction, PredictionImages
from webapp.screening import review_copy


def upload(client, *files, accept=None):
    token = csrf_token(client, "/screen")
    data = {"csrf_token": token, "files": [(io.BytesIO(body), name) for name, body in files]}
    headers = {"Accept": accept} if accept else {}
    return client.post("/screen", data=data, content_type="multipart/form-data", headers=headers)


def count(app) -> int:
    with app.app_context():
        return db.session.query(Prediction).count()


@pytest.fixture
def signed_in(client, auth, clinician_user):
    auth.login()
    return client


def test_upload_page_shows_limits(signed_in):
    html = signed_in.get("/screen").get_data(as_text=True)
    assert "50 MB" in html and ".dcm" in html and 'type="file"' in html and "multiple" in html
    assert 'for="files"' in html  # the file control has a label


def test_upload_two_real_radiographs(app, signed_in, clinician_user):
    response = upload(
        signed_in, ("normal.jpeg", fixture_image("normal.jpeg")), ("pneumonia.jpeg", fixture_image("pneumonia.jpeg"))
    )
    assert response.status_code == 303
    page = signed_in.get(response.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert html.count('class="card result"') == 2
    assert "Calibrated probabilities" in html and "Show heat map" in html
    assert "not a diagnosis" in html
    assert "normal.jpeg" in html and "pneumonia.jpeg" in html  # the sent names, shown this once
    with app.app_context():
        rows = db.session.query(Prediction).order_by(Prediction.id).all()
        # Neutral names by default (STORE_ORIGINAL_FILENAMES=false); the page above still showed the sent ones.
        assert [r.filename for r in rows] == [f"upload-{rows[0].id}-1.jpeg", f"upload-{rows[1].id}-2.jpeg"]
        row = rows[0]
        assert row.user_id == clinician_user
        assert row.sha256 == hashlib.sha256(fixture_image("normal.jpeg")).hexdigest()
        assert row.image_format == "JPEG" and row.file_size == len(fixture_image("normal.jpeg"))
        assert (row.width, row.height) == (224, 224)
        assert row.label in LABELS
        assert abs(row.p_normal + row.p_pneumonia - 1) < 1e-5
        assert 0 < row.threshold < 1 and row.model_version and row.latency_ms > 0
        review = Image.open(io.BytesIO(row.images.review_png))
        assert review.format == "PNG" and review.mode == "L" and max(review.size) <= 320
        assert Image.open(io.BytesIO(row.images.heatmap_png)).format == "PNG"


def test_a_film_whose_images_cannot_be_stored_leaves_no_prediction(app, signed_in, monkeypatch):
    # The images live in their own table (prediction_images): they are written in the prediction's
    # transaction, so a failure there (here a heat map the NOT NULL column refuses) keeps neither.
    from webapp.screening import service

    monkeypatch.setattr(service, "heatmap_png", lambda heatmap: None)
    response = upload(signed_in, ("a.jpeg", fixture_image("normal.jpeg")), accept="application/json")
    assert response.status_code == 500 and "Traceback" not in response.get_data(as_text=True)
    assert count(app) == 0
    with app.app_context():
        assert db.session.query(PredictionImages).count() == 0


def test_result_notes_match_verdict(app, signed_in):
    response = upload(signed_in, ("pneumonia.jpeg", fixture_image("pneumonia.jpeg")))
    html = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        label = db.session.query(Prediction).one().label
    expected = {
        "NORMAL": "No radiographic sign of pneumonia",
        "PNEUMONIA": "suggestive of pneumonia",
        "UNKNOWN": "No verdict",
    }[label]
    assert expected in html
    assert f'data-notes-for="{label}"' in html


def test_photo_is_unknown_with_reason(app, signed_in):
    response = upload(signed_in, ("photo.jpg", fixture_image("photo.jpg")))
    html = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        row = db.session.query(Prediction).one()
        assert row.label == "UNKNOWN" and row.unknown_reason
    assert "Why UNKNOWN" in html


def test_corrupt_file_gives_clear_message_and_no_row(app, signed_in):
    response = upload(signed_in, ("broken.jpeg", fixture_image("normal.jpeg")[:300]))
    assert 400 <= response.status_code < 500
    html = response.get_data(as_text=True)
    assert "broken.jpeg" in html and 'class="error"' in html
    assert count(app) == 0


def test_corrupt_file_json_for_script(app, signed_in):
    response = upload(signed_in, ("a.txt", b"hello"), accept="application/json")
    assert 400 <= response.status_code < 500
    assert response.json["errors"][0]["message"]
    assert count(app) == 0


def test_mixed_batch_keeps_good_files_and_reports_bad(app, signed_in):
    response = upload(signed_in, ("good.jpeg", fixture_image("normal.jpeg")), ("bad.png", b"\x89PNG\r\n\x1a\nxx"))
    assert response.status_code == 303
    html = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "bad.png" in html and "good.jpeg" in html
    assert count(app) == 1


def test_upload_without_files(signed_in):
    response = upload(signed_in)
    assert response.status_code == 400
    assert "Choose at least one file" in response.get_data(as_text=True)


def test_upload_requires_csrf(app, signed_in):
    response = signed_in.post(
        "/screen",
        data={"files": [(io.BytesIO(fixture_image("normal.jpeg")), "n.jpeg")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400 and count(app) == 0


@pytest.mark.parametrize(
    "disposition, boundary",
    [
        ('form-data; name="files"; filename="\u00e9l\u00e8ve.jpg"'.encode("latin-1"), "XyZ"),  # raw Latin-1 name
        (b'form-data; name="files"; filename="a.jpg"', "Other"),  # a boundary the body does not use
    ],
)
@pytest.mark.parametrize(
    "accept, token_in", [("text/html", "body"), ("application/json", "body"), ("text/html", "header")]
)
def test_an_unreadable_upload_is_not_called_an_expired_form(app, signed_in, disposition, boundary, accept, token_in):
    """Found by a script posting to the upload page: werkzeug reads nothing from such a body, the
    CSRF token included, and the page said the form had expired (or, with the token in a header,
    that no file was chosen). The API says what is wrong (test_api.py); so does the page now."""
    token = csrf_token(signed_in, "/screen")
    body = b""
    if token_in == "body":
        body += b'--XyZ\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode() + b"\r\n"
    body += b"--XyZ\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: image/jpeg\r\n\r\n"
    body += fixture_image("normal.jpeg") + b"\r\n--XyZ--\r\n"
    headers = {"Accept": accept} | ({"X-CSRFToken": token} if token_in == "header" else {})
    response = signed_in.post(
        "/screen", data=body, content_type=f"multipart/form-data; boundary={boundary}", headers=headers
    )
    assert response.status_code == 400 and count(app) == 0
    said = "No file could be read from this upload, so nothing was screened: the boundary in its Content-Type"
    if accept == "application/json":
        assert response.json["errors"][0]["code"] == "no_file"
        assert response.json["errors"][0]["message"].startswith(said)
    else:
        html = response.get_data(as_text=True)
        assert said in html and "had expired" not in html and "Choose at least one file" not in html
        assert 'id="upload-errors"' in html  # the upload page itself, its refusal in its alert


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_an_upload_without_a_length_is_told_so(app, signed_in, accept):
    # Read as empty (no Content-Length, not chunked): the page blamed the boundary, which was right.
    token = csrf_token(signed_in, "/screen")
    body = b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.jpeg"\r\n\r\n'
    body += fixture_image("normal.jpeg") + b"\r\n--XyZ--\r\n"
    headers = {"Accept": accept, "X-CSRFToken": token}
    response = post_without_length(signed_in, "/screen", body, "multipart/form-data; boundary=XyZ", headers)
    assert response.status_code == 400 and count(app) == 0
    said = "nothing was screened: the request had neither a Content-Length nor Transfer-Encoding: chunked"
    text = response.json["errors"][0]["message"] if accept == "application/json" else response.get_data(as_text=True)
    assert said in text and "boundary" not in text


def test_an_unreadable_upload_signed_out_goes_to_sign_in(client, clinician_user):
    body = b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\nx\r\n--XyZ--\r\n'
    response = client.post("/screen", data=body, content_type="multipart/form-data; boundary=Other")
    assert response.status_code in (302, 303) and "/auth/login" in response.headers["Location"]


def test_upload_over_size_limit_is_413(app, signed_in):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = upload(signed_in, ("n.jpeg", fixture_image("normal.jpeg")))
    assert response.status_code == 413
    assert "larger than this server accepts" in response.get_data(as_text=True)


def test_markup_in_file_name_is_escaped(app, signed_in):
    response = upload(signed_in, ("<img src=x onerror=alert(1)>.jpeg", fixture_image("normal.jpeg")))
    html = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.jpeg" in html


def _one_prediction(app, signed_in) -> int:
    upload(signed_in, ("n.jpeg", fixture_image("normal.jpeg")))
    with app.app_context():
        return db.session.query(Prediction).one().id


def test_feedback_is_saved_and_updated(app, signed_in):
    pid = _one_prediction(app, signed_in)
    token = csrf_token(signed_in, f"/predictions/{pid}")
    response = signed_in.post(
        f"/predictions/{pid}/feedback", data={"csrf_token": token, "label": "PNEUMONIA", "comment": "RLL consolidation"}
    )
    assert response.status_code == 303
    signed_in.post(f"/predictions/{pid}/feedback", data={"csrf_token": token, "label": "NOT_CXR", "comment": ""})
    with app.app_context():
        feedback = db.session.query(Feedback).one()
        assert feedback.label == "NOT_CXR" and feedback.prediction_id == pid
    page = signed_in.get(f"/predictions/{pid}").get_data(as_text=True)
    # The reading in the words the form offered, not its stored code.
    assert "Reviewed by clin: Not a chest radiograph" in page and "NOT_CXR</" not in page
    assert "clin: NOT_CXR" not in page


def test_replacing_another_readers_reading_is_audited(app, client, auth, clinician_user, other_clinician, admin_user):
    with app.app_context():
        pid = add_prediction(None, "PNEUMONIA", source="dicom")  # a PACS film: any clinician may read it
        own = add_prediction(clinician_user)

    def read(who: str, prediction_id: int, label: str) -> None:
        auth.login(who)
        token = csrf_token(client, f"/predictions/{prediction_id}")
        data = {"csrf_token": token, "label": label, "comment": "consolidation RLL"}
        assert client.post(f"/predictions/{prediction_id}/feedback", data=data).status_code == 303
        auth.logout()

    read("clin", pid, "PNEUMONIA")
    read("clin", pid, "PNEUMONIA")  # one's own reading again: nothing to keep
    read("other", pid, "NORMAL")
    read("admin", own, "NORMAL")
    read("clin", own, "PNEUMONIA")
    with app.app_context():
        trail = [(e.actor, e.target, e.details) for e in db.session.query(AuditEvent).filter_by(action="feedback.save")]
    assert trail == [
        ("other", f"prediction {pid}", "NORMAL, replacing PNEUMONIA by clin"),
        ("admin", f"prediction {own}", "NORMAL"),
        ("clin", f"prediction {own}", "PNEUMONIA, replacing NORMAL by admin"),
    ]
    assert "consolidation" not in " ".join(details for *_, details in trail)


def test_another_readers_review_is_not_prefilled_as_ones_own(app, client, auth, clinician_user, other_clinician):
    """A PACS film read by one clinician, opened by another: the form used to come filled with the
    first reader's label and comment under "Your review", so changing only the label saved the
    first reader's words as the second reader's (a comment contradicting the reading)."""
    with app.app_context():
        pid = add_prediction(None, "PNEUMONIA", source="dicom")
    auth.login("clin")
    token = csrf_token(client, f"/predictions/{pid}")
    data = {"csrf_token": token, "label": "PNEUMONIA", "comment": "air bronchograms in the RLL"}
    client.post(f"/predictions/{pid}/feedback", data=data)
    own_page = client.get(f"/predictions/{pid}").get_data(as_text=True)
    assert "air bronchograms in the RLL</textarea>" in own_page and "Update review" in own_page
    auth.logout()
    auth.login("other")
    page = client.get(f"/predictions/{pid}").get_data(as_text=True)
    assert "Reviewed by clin: Pneumonia (air bronchograms in the RLL)" in page  # shown as clin's ...
    assert "air bronchograms in the RLL</textarea>" not in page  # ... not put into other's own form
    assert "Replace review" in page and "replaces the reading by clin" in page
    assert "Update review" not in page


def test_an_unknown_answer_preselects_no_reading(app, client, auth, clinician_user):
    """UNKNOWN is no reading of the film (an adult's chest film, a score at the threshold), yet the
    form came with "Not a chest radiograph" selected, so one click on "Confirm / correct" recorded a
    chest film as not one, and the summary counted it as agreeing with the model."""
    with app.app_context():
        unknown = add_prediction(clinician_user, "UNKNOWN")
        normal = add_prediction(clinician_user, "NORMAL")
    auth.login()
    page = client.get(f"/predictions/{unknown}").get_data(as_text=True)
    assert '<option selected value="">Choose your reading</option>' in page
    assert 'selected value="NOT_CXR"' not in page
    assert 'name="label" required>' in page  # the browser itself refuses the blank choice
    assert '<option selected value="NORMAL">' in client.get(f"/predictions/{normal}").get_data(as_text=True)
    token = csrf_token(client, f"/predictions/{unknown}")
    client.post(f"/predictions/{unknown}/feedback", data={"csrf_token": token, "label": "", "comment": "adult film"})
    with app.app_context():
        assert db.session.query(Feedback).count() == 0


def test_feedback_rejects_unknown_label(app, signed_in):
    pid = _one_prediction(app, signed_in)
    token = csrf_token(signed_in, f"/predictions/{pid}")
    signed_in.post(f"/predictions/{pid}/feedback", data={"csrf_token": token, "label": "MAYBE"})
    with app.app_context():
        assert db.session.query(Feedback).count() == 0


def test_other_clinicians_cannot_see_a_prediction(app, client, auth, signed_in, other_clinician):
    pid = _one_prediction(app, signed_in)
    auth.logout()
    auth.login("other")
    for path in (f"/predictions/{pid}", f"/predictions/{pid}/image.png", f"/screen/results?id={pid}"):
        assert client.get(path).status_code == 403
    assert client.get("/predictions/99999").status_code == 404
    # Each refused look is in the audit trail, with the view it was refused.
    with app.app_context():
        refused = db.session.execute(
            select(AuditEvent.actor, AuditEvent.target, AuditEvent.details).where(
                AuditEvent.action == "prediction_view_refused"
            )
        ).all()
    target = f"prediction {pid}"
    assert sorted(refused) == sorted(
        ("other", target, view) for view in ("screening.detail", "screening.image", "screening.results")
    )


def test_images_are_served_privately(app, signed_in):
    pid = _one_prediction(app, signed_in)
    for kind in ("image", "heatmap"):
        response = signed_in.get(f"/predictions/{pid}/{kind}.png")
        assert response.mimetype == "image/png" and "no-store" in response.headers["Cache-Control"]
    # The stored map is grey and small; the page gets the coloured overlay in the review copy's shape.
    review = Image.open(io.BytesIO(signed_in.get(f"/predictions/{pid}/image.png").data))
    overlay = Image.open(io.BytesIO(signed_in.get(f"/predictions/{pid}/heatmap.png").data))
    assert overlay.mode == "RGB" and overlay.size == review.size


def test_a_repeated_id_in_the_results_address_draws_one_card(app, signed_in):
    pid = _one_prediction(app, signed_in)
    page = signed_in.get(f"/screen/results?id={pid}&id={pid}").get_data(as_text=True)
    assert page.count(f'id="prediction-{pid}"') == 1


@pytest.fixture
def statements(app):
    """The SQL the app sends while the test runs."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


def test_the_results_page_reads_its_films_once(app, signed_in, clinician_user, statements):
    # Found by profiling the page's upload (5 December): the page looked each film up to see that it was
    # still kept, dropped the row (the session holds rows weakly), then read it again to check who may
    # see it, and each card's template read the film's reading on its own: 3 SELECTs a film, 60 for a
    # page of 20. Now one for the films and one for their readings, whatever their number.
    response = upload(signed_in, *[(f"film{i}.jpeg", fixture_image("normal.jpeg")) for i in range(3)])
    with app.app_context():
        first = db.session.scalar(select(Prediction.id).order_by(Prediction.id))
        db.session.add(Feedback(prediction_id=first, user_id=clinician_user, label="NORMAL", comment="read"))
        db.session.commit()
    statements.clear()
    page = signed_in.get(response.headers["Location"])
    assert page.status_code == 200 and page.get_data(as_text=True).count('class="card result"') == 3
    assert "Reviewed by clin" in page.get_data(as_text=True)
    films = [s for s in statements if s.startswith("SELECT") and "FROM predictions" in s]
    readings = [s for s in statements if s.startswith("SELECT") and "FROM feedback" in s]
    assert len(films) == 1 and len(readings) == 1, statements


def test_each_image_route_reads_what_it_serves_in_one_select(app, signed_in, statements):
    # Found by profiling the page's upload (5 December): through the relationship, the film's image
    # route read the stored heat map it does not serve, then its review copy in a second SELECT.
    pid = _one_prediction(app, signed_in)
    served = {"image": ["review_png"], "heatmap": ["review_png", "heatmap_png"], "heatmap-layer": ["heatmap_png"]}
    for route, columns in served.items():
        statements.clear()
        assert signed_in.get(f"/predictions/{pid}/{route}.png").mimetype == "image/png"
        reads = [s for s in statements if s.startswith("SELECT") and "FROM prediction_images" in s]
        assert len(reads) == 1, (route, statements)
        assert [c for c in ("review_png", "heatmap_png") if c in reads[0]] == columns, (route, reads)


def test_a_film_pruned_while_its_image_is_asked_for_is_not_kept_not_a_500(app, signed_in, monkeypatch):
    # The image was read through the relationship after the film's check: a prune in between (the
    # retention job) left None there and the reader an AttributeError's 500.
    pid = _one_prediction(app, signed_in)

    def pruned_meanwhile(prediction_id):
        with db.engine.begin() as conn:
            conn.execute(delete(PredictionImages).where(PredictionImages.prediction_id == prediction_id))
            conn.execute(delete(Prediction).where(Prediction.id == prediction_id))
        return False

    monkeypatch.setattr(review_copy, "wait_for", pruned_meanwhile)
    response = signed_in.get(f"/predictions/{pid}/image.png")
    assert response.status_code == 404 and "retention period" in response.get_data(as_text=True)


def test_a_double_clicked_first_reading_is_saved_once(tmp_path, monkeypatch):
    """Two saves of a film's first reading at once (a double-click on Save, two readers of one PACS
    film) both found no reading and both inserted one: the second broke the one-reading-per-film
    rule and its reader got a 500. Both requests are held after that lookup until both have made it."""
    app = threadable_app(tmp_path, WTF_CSRF_ENABLED=False)
    clinician = make_user(app, "clin", "clinician")
    with app.app_context():
        pid = add_prediction(clinician)
    both_looked = threading.Barrier(2)
    held = []
    add = db.session.add

    def add_after_both_looked(row, *args, **kwargs):
        if isinstance(row, Feedback) and len(held) < 2:
            held.append(row)
            both_looked.wait(timeout=30)
        return add(row, *args, **kwargs)

    monkeypatch.setattr(db.session, "add", add_after_both_looked)
    clients = [app.test_client(), app.test_client()]
    for client in clients:
        client.post("/auth/login", data={"username": "clin", "password": PASSWORDS["clin"]})

    def save(client, label):
        return lambda: client.post(f"/predictions/{pid}/feedback", data={"label": label, "comment": ""}).status_code

    assert in_parallel(save(clients[0], "PNEUMONIA"), save(clients[1], "NORMAL")) == [303, 303]
    with app.app_context():
        assert db.session.query(Feedback).filter_by(prediction_id=pid).count() == 1
        db.session.remove()
        db.engine.dispose()
