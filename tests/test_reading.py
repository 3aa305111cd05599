"""The reading view's server side: the review copy at the review size, the heat-map layer, a batch's
order and summary, the per-user theme, the printable result, and UNKNOWN in history and CSV."""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.factories import add_prediction
from tests.helpers import PASSWORDS, csrf_token, fixture_image, make_user, reset_database, token_form
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.inference.decode import decode
from webapp.inference.overlay import colourise, heatmap_png, layer_png
from webapp.models import Prediction, User
from webapp.screening import review_copy
from webapp.screening.batch import reading_order, summarise


def jpeg(side: int, source: str = "pneumonia.jpeg") -> bytes:
    image = Image.open(io.BytesIO(fixture_image(source))).convert("L").resize((side, side * 3 // 4))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "L"
        assert not image.info.get("exif") and not image.getexif()  # decoded pixels only
        return image.size


@pytest.mark.parametrize(
    ("side", "again", "expected"), [(3000, True, (1024, 768)), (800, True, (800, 600)), (300, False, (300, 225))]
)
def test_review_copy_reaches_the_review_size_never_beyond_the_film(side, again, expected):
    data = jpeg(side)
    image = decode(data, target_size=224)
    # The model's decode of a big film is reduced; the review copy decodes it again, larger.
    assert review_copy.needs_larger_decode(image, 1024) == again
    assert png_size(review_copy.make(data, image, 1024)) == expected


def test_review_copy_size_comes_from_the_setting(app, client, auth, clinician_user):
    app.config["REVIEW_IMAGE_SIZE"] = 512
    auth.login()
    token = csrf_token(client, "/screen")
    client.post(
        "/screen",
        data={"csrf_token": token, "files": [(io.BytesIO(jpeg(2000)), "big.jpg")]},
        content_type="multipart/form-data",
    )
    with app.app_context():
        row = db.session.query(Prediction).one()
        assert png_size(row.images.review_png) == (512, 384)
        assert (row.width, row.height) == (2000, 1500)


@pytest.fixture
def background_app(tmp_path):
    """An app that makes big films' full-size copies after the answer, as deployed."""
    # A database file: the copying thread writes through a connection of its own.
    app = create_app(
        TestingConfig,
        {
            "INSTANCE_DIR": tmp_path,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'bg.sqlite'}",
            "REVIEW_COPY_IN_BACKGROUND": True,
        },
    )
    with app.app_context():
        reset_database()
    make_user(app, "clin", "clinician")
    yield app
    # The copying thread is the process's: a copy of this app's still being made (a page made its own
    # meanwhile) must not end during the next test, where it forgot that test's copy of the same id.
    review_copy._POOL.submit(lambda: None).result(timeout=120)
    with app.app_context():
        db.engine.dispose()


def upload_page(app, *files: tuple[bytes, str]):
    """Sign in as the clinician and send `files` (bytes, name) through the upload page; the client."""
    client = app.test_client()
    client.post(
        "/auth/login",
        data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": csrf_token(client, "/auth/login")},
    )
    data = {"csrf_token": csrf_token(client, "/screen"), "files": [(io.BytesIO(body), name) for body, name in files]}
    assert client.post("/screen", data=data, content_type="multipart/form-data").status_code == 303
    return client


def stored_copy_size(app, prediction_id: int) -> tuple[int, int]:
    with app.app_context():
        return png_size(db.session.get(Prediction, prediction_id).images.review_png)


def test_big_films_get_their_full_copy_after_the_answer(background_app):
    app = background_app
    client = upload_page(app, (jpeg(2400), "big.jpg"), (jpeg(200), "small.jpg"))
    with app.app_context():
        big_id, small_id = db.session.scalars(db.select(Prediction.id).order_by(Prediction.id)).all()
    assert stored_copy_size(app, small_id) == (200, 150)  # made at once: nothing bigger to decode
    # The image route waits for the copy being made, then serves it at the full review size.
    image = client.get(f"/predictions/{big_id}/image.png")
    assert Image.open(io.BytesIO(image.data)).size == (1024, 768)
    assert not review_copy.wait_for(big_id)  # done and forgotten
    assert stored_copy_size(app, big_id) == (1024, 768)


def test_a_copy_a_page_waited_for_is_forgotten_when_the_wait_ends(background_app, monkeypatch):
    """The copy was forgotten by a done-callback of its future, and a future wakes its waiters before it
    runs its callbacks: a page that had waited could end while the copy was still listed (the copying
    thread, at nice 19, waits long for the CPU on a busy server), and backlog() counted it. Here the copy
    starts when the page asks and forgets slowly, as that thread would."""
    upgrade, forget, wait_for = review_copy._upgrade, review_copy._forget, review_copy.wait_for
    started, asked = threading.Event(), threading.Event()

    def upgrade_once_asked(*arguments):
        started.set()
        asked.wait(30)
        upgrade(*arguments)

    def slow_forget(prediction_id):
        time.sleep(1)
        forget(prediction_id)

    def page_waits(prediction_id):
        asked.set()
        return wait_for(prediction_id)

    monkeypatch.setattr(review_copy, "WAIT_S", 30.0)  # the page waits for the copy, never makes its own
    monkeypatch.setattr(review_copy, "_upgrade", upgrade_once_asked)
    monkeypatch.setattr(review_copy, "_forget", slow_forget)
    monkeypatch.setattr(review_copy, "wait_for", page_waits)
    client = upload_page(background_app, (jpeg(2400), "big.jpg"))
    with background_app.app_context():
        big_id = db.session.scalar(db.select(Prediction.id))
    assert started.wait(30)  # the copy has begun: the page waits for it rather than making its own
    image = client.get(f"/predictions/{big_id}/image.png")
    assert Image.open(io.BytesIO(image.data)).size == (1024, 768)
    assert not wait_for(big_id) and review_copy.backlog() == 0


def test_a_page_does_not_wait_behind_the_backlog(background_app):
    # The copying thread busy with something else: the film's copy waits its turn...
    busy = threading.Event()
    review_copy._POOL.submit(busy.wait, 30)
    try:
        client = upload_page(background_app, (jpeg(2400), "big.jpg"))
        with background_app.app_context():
            big_id = db.session.scalar(db.select(Prediction.id))
        assert stored_copy_size(background_app, big_id)[0] < 1024  # the interim copy, for now
        # ... until a page asks for it: made there and then, not after the backlog (its queued copy is
        # called off, not waited for: a clock here read a loaded machine's slowness as waiting).
        queued = review_copy._PENDING[big_id][0]
        image = client.get(f"/predictions/{big_id}/image.png")
        assert queued.cancelled()
    finally:
        busy.set()
    assert Image.open(io.BytesIO(image.data)).size == (1024, 768)
    assert stored_copy_size(background_app, big_id) == (1024, 768)
    assert not review_copy.wait_for(big_id)


def test_a_page_does_not_wait_out_a_copy_starved_of_cpu(background_app, monkeypatch):
    """The copying thread runs at nice 19: on a busy server (uploads, the model, other processes) it gets
    almost no CPU, and a page that waited for the copy it had begun waited all of its 10 s and then
    showed the interim copy, a priority inversion a radiologist saw as a slow, blurred film. A page now
    waits briefly, then makes the copy itself at its own priority. Here the copying thread, once it has
    begun, gets no CPU at all until the end."""
    upgrade = review_copy._upgrade
    started, starved_until = threading.Event(), threading.Event()

    def starved_on_the_copying_thread(*arguments):
        if threading.current_thread().name.startswith("review-copy"):
            started.set()
            starved_until.wait(60)
        upgrade(*arguments)

    monkeypatch.setattr(review_copy, "_upgrade", starved_on_the_copying_thread)
    try:
        client = upload_page(background_app, (jpeg(2400), "big.jpg"))
        with background_app.app_context():
            big_id = db.session.scalar(db.select(Prediction.id))
        assert started.wait(30)
        image = client.get(f"/predictions/{big_id}/image.png")
        assert Image.open(io.BytesIO(image.data)).size == (1024, 768)  # not the interim copy
        assert stored_copy_size(background_app, big_id) == (1024, 768)
        assert not review_copy.wait_for(big_id)  # made: a later page does not wait or make it again
    finally:
        starved_until.set()


def test_past_the_backlog_an_upload_makes_its_own_copy(background_app, monkeypatch):
    monkeypatch.setattr(review_copy, "BACKLOG", 0)
    upload_page(background_app, (jpeg(2400), "big.jpg"))
    with background_app.app_context():
        big_id = db.session.scalar(db.select(Prediction.id))
    assert stored_copy_size(background_app, big_id) == (1024, 768)  # no background copy to wait for
    assert not review_copy.wait_for(big_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_copies_are_made_at_the_lowest_cpu_priority():
    nice = review_copy._POOL.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert nice == review_copy.NICE == 19


def test_heatmap_layer_is_transparent_where_the_map_is_weak():
    heat = np.zeros((224, 224), np.float32)
    heat[100:140, 60:120] = 1.0
    with Image.open(io.BytesIO(layer_png(heatmap_png(heat)))) as layer:
        assert layer.mode == "RGBA" and layer.size == (224, 224)
        alpha = np.asarray(layer)[..., 3]
    assert alpha[0, 0] == 0 and alpha[120, 90] == 255


def test_heatmap_layer_route(app, client, auth, clinician_user, other_clinician):
    with app.app_context():
        mine = add_prediction(clinician_user)
        theirs = add_prediction(other_clinician)
    auth.login()
    response = client.get(f"/predictions/{mine}/heatmap-layer.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert "no-store" in response.headers["Cache-Control"]
    assert client.get(f"/predictions/{theirs}/heatmap-layer.png").status_code == 403


def test_the_heatmap_key_is_drawn_in_the_maps_own_colours_beside_the_film(app, client, auth, clinician_user):
    with app.app_context():
        mine = add_prediction(clinician_user)
    auth.login()
    response = client.get("/heatmap-key.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    with Image.open(io.BytesIO(response.data)) as key:
        row = np.asarray(key.convert("RGB"))[0].astype(int)
    expected = np.rint(colourise(np.array([0.0, 1.0], np.float32)) * 255).astype(int)
    assert (row[0] == expected[0]).all() and (row[-1] == expected[1]).all()  # weakest left, strongest right
    for page in (f"/predictions/{mine}", f"/predictions/{mine}/print"):
        html = client.get(page).get_data(as_text=True)
        assert 'src="/heatmap-key.png"' in html and "stronger evidence" in html, page


def _p(label: str, p: float, reason: str | None = None):
    return SimpleNamespace(label=label, p_pneumonia=p, unknown_reason=reason)


def test_reading_order_and_summary():
    batch = [
        _p("NORMAL", 0.1),
        _p("UNKNOWN", 0.9, "Not a chest radiograph."),
        _p("PNEUMONIA", 0.7),
        _p("NORMAL", 0.3),
        _p("PNEUMONIA", 0.95),
        _p("UNKNOWN", 0.2, "Not a chest radiograph."),
    ]
    ordered = reading_order(batch)
    assert [(p.label, p.p_pneumonia) for p in ordered] == [
        ("PNEUMONIA", 0.95),
        ("PNEUMONIA", 0.7),
        ("UNKNOWN", 0.9),
        ("UNKNOWN", 0.2),
        ("NORMAL", 0.3),
        ("NORMAL", 0.1),
    ]
    summary = summarise(batch)
    assert summary.total == 6
    assert summary.counts == [("PNEUMONIA", 2), ("UNKNOWN", 2), ("NORMAL", 2)]
    assert summary.unknown_reasons == [("Not a chest radiograph.", 2)]
    assert summarise([_p("NORMAL", 0.1)]).counts == [("NORMAL", 1)]


def test_results_page_orders_and_summarises(app, client, auth, clinician_user):
    with app.app_context():
        ids = [add_prediction(clinician_user, label, filename=f"{label}.jpeg") for label in ("NORMAL", "UNKNOWN")]
        ids.append(add_prediction(clinician_user, "PNEUMONIA", filename="PNEUMONIA.jpeg"))
    auth.login()
    query = "&".join(f"id={i}" for i in ids)
    html = client.get(f"/screen/results?{query}").get_data(as_text=True)
    assert html.index('id="prediction-3"') < html.index('id="prediction-2"') < html.index('id="prediction-1"')
    assert "3 films:" in html and "1 × not a chest radiograph" in html
    assert 'href="#prediction-3"' in html and "Keyboard shortcuts" in html
    upload_order = client.get(f"/screen/results?{query}&order=upload").get_data(as_text=True)
    assert upload_order.index('id="prediction-1"') < upload_order.index('id="prediction-3"')


def test_theme_is_kept_per_user(app, client, auth, clinician_user):
    auth.login()
    page = client.get("/history/").get_data(as_text=True)
    assert 'data-theme="system"' in page
    token = csrf_token(client, "/history/")
    response = client.post("/preferences/theme", data={"csrf_token": token, "theme": "dark", "back": "/history/"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/history/")
    with app.app_context():
        assert db.session.get(User, clinician_user).theme == "dark"
    assert 'data-theme="dark"' in client.get("/history/").get_data(as_text=True)
    # Another user's pages are not affected.
    auth.logout()
    assert 'data-theme="system"' in client.get("/auth/login").get_data(as_text=True)


def test_the_theme_switch_on_a_page_answering_a_form_returns_to_a_page(app, client, auth, admin_user, clinician_user):
    """Found on the Users page in Chromium: the page showing a new API token's secret answers the
    form's POST at /admin/users/N/tokens, which takes no GET; Apply in its theme switch came back as
    a 405 page ("That action is not allowed here"). It now returns to the page the form was on."""
    auth.login("admin")
    form = token_form(client)
    issued = client.post(
        f"/admin/users/{clinician_user}/tokens",
        data={**form, "name": "x"},
        headers={"Referer": "http://localhost/admin/users"},
    )
    html = issued.get_data(as_text=True)
    assert issued.status_code == 200 and "New API token" in html
    back = re.search(r'name="back" value="([^"]*)"', html).group(1)
    response = client.post("/preferences/theme", data={"csrf_token": form["csrf_token"], "theme": "dark", "back": back})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/users")
    assert client.get(response.headers["Location"]).status_code == 200
    without_referer = client.post(f"/admin/users/{clinician_user}/tokens", data={**token_form(client), "name": "y"})
    back = re.search(r'name="back" value="([^"]*)"', without_referer.get_data(as_text=True)).group(1)
    assert back == "/screen"  # no page to go back to is known: the upload page, not a 405


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"theme": "neon", "back": "/history/"}, "/history/"),
        ({"theme": "light", "back": "//evil.example/"}, "/screen"),
        ({"theme": "light", "back": "/a\nb"}, "/screen"),  # a line break in a Location header: a 500 before
    ],
)
def test_theme_refuses_bad_values_and_foreign_redirects(app, client, auth, clinician_user, data, location):
    auth.login()
    token = csrf_token(client, "/history/")
    response = client.post("/preferences/theme", data={"csrf_token": token, **data})
    assert response.status_code == 303 and response.headers["Location"].endswith(location)
    with app.app_context():
        assert db.session.get(User, clinician_user).theme == ("light" if data["theme"] == "light" else "system")


def test_theme_needs_sign_in_and_csrf(app, client, auth, clinician_user):
    anonymous = client.post("/preferences/theme", data={"theme": "dark"})  # no session, no CSRF token
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/auth/login")
    auth.login()
    client.post("/preferences/theme", data={"theme": "dark"})  # no CSRF token
    with app.app_context():
        assert db.session.get(User, clinician_user).theme == "system"


def test_print_view(app, client, auth, clinician_user, other_clinician):
    with app.app_context():
        mine = add_prediction(clinician_user, "UNKNOWN")
        theirs = add_prediction(other_clinician)
    auth.login()
    html = client.get(f"/predictions/{mine}/print").get_data(as_text=True)
    for text in (
        "UNKNOWN",
        "not a chest radiograph",
        "v-test",
        "Decision threshold",
        "Screened by",
        "Printed by",
        "clin,",
        "Intended use",
        f"/predictions/{mine}/image.png",
        "Heat map not printed",
    ):
        assert text in html, text
    assert '<details class="model-scores" open>' in html  # the record shows the scores, greyed
    # Printed twice (under the bars and again in the facts list): once, under the bars it is read against.
    assert html.count("Decision threshold") == 1
    # The paper said "de-identified review copy" above a film whose burned-in name it printed: only the
    # header is gone, a name written into the pixels by the modality is printed with the film.
    assert "de-identified" not in html and "text burned into the image" in html
    # Like the screen, which hides it on UNKNOWN: the heat map is printed for an answered film only.
    assert f"/predictions/{mine}/heatmap.png" not in html
    with app.app_context():
        answered = add_prediction(clinician_user, "PNEUMONIA")
    html = client.get(f"/predictions/{answered}/print").get_data(as_text=True)
    assert f"/predictions/{answered}/heatmap.png" in html and "Heat map not printed" not in html
    assert client.get(f"/predictions/{theirs}/print").status_code == 403


def test_unknown_scores_are_folded_and_grey(app, client, auth, clinician_user):
    with app.app_context():
        unknown = add_prediction(clinician_user, "UNKNOWN")
        normal = add_prediction(clinician_user, "NORMAL")
    auth.login()
    html = client.get(f"/predictions/{unknown}").get_data(as_text=True)
    assert "<summary>Show model scores</summary>" in html
    assert "bar-pneumonia" not in html and "bar-normal" not in html and "bar-muted" in html
    html = client.get(f"/predictions/{normal}").get_data(as_text=True)
    assert "Show model scores" not in html and "bar-pneumonia" in html


def test_history_and_csv_keep_unknown_scores_in_their_own_column(app, client, auth, admin_user):
    with app.app_context():
        add_prediction(admin_user, "UNKNOWN")
        add_prediction(admin_user, "PNEUMONIA")
    auth.login("admin")
    html = client.get("/history/").get_data(as_text=True)
    assert html.count('<td class="raw-score">') == 2 and "n/a" in html
    table = list(csv.DictReader(io.StringIO(client.get("/admin/history.csv").get_data(as_text=True))))
    rows = {r["label"]: r for r in table}
    assert rows["UNKNOWN"]["p_pneumonia"] == "" and rows["UNKNOWN"]["p_normal"] == ""
    assert rows["UNKNOWN"]["raw_p_pneumonia"] == "0.500000"
    assert rows["PNEUMONIA"]["p_pneumonia"] == rows["PNEUMONIA"]["raw_p_pneumonia"] == "0.900000"


def test_the_csv_export_carries_the_caution(app, client, auth, admin_user):
    caution = "Outside the validated age range: the DICOM header gives an age outside 1 to 5 years."
    with app.app_context():
        cautioned = db.session.get(Prediction, add_prediction(admin_user, "NORMAL"))
        cautioned.caution = caution
        add_prediction(admin_user, "PNEUMONIA")
        db.session.commit()
    auth.login("admin")
    table = list(csv.DictReader(io.StringIO(client.get("/admin/history.csv").get_data(as_text=True))))
    assert {r["label"]: r["caution"] for r in table} == {"NORMAL": caution, "PNEUMONIA": ""}
    assert list(table[0])[-2:] == ["raw_p_pneumonia", "caution"]  # the older columns keep their places
