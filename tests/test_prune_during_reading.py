"""A reading saved on a film that `predictions prune` deletes at that very moment.

On PostgreSQL the prune locks its batch's films until it commits; a reading saved meanwhile waited on
that lock, then failed on the foreign key: the reader got a 500. On SQLite, which checks no foreign
key, the reading was written anyway ("Review saved"): a reading, free-text comment included, of a film
that no longer exists, outliving the retention period its film was deleted for. Both now answer 410
with what happened (the page the reading was sent from, else the reader's history), and save nothing.
"""

from __future__ import annotations

import html
import threading
from datetime import timedelta

from sqlalchemy import func, select

from tests.factories import add_prediction
from tests.helpers import AuthActions, csrf_token, make_user, threadable_app
from webapp.extensions import db
from webapp.models import AuditEvent, Feedback, User, WorklistRead, utcnow
from webapp.pacs import routes as pacs_routes
from webapp.retention import prune_predictions
from webapp.screening import routes


def test_a_reading_saved_as_its_film_is_pruned_is_refused_clearly(tmp_path, monkeypatch):
    app = threadable_app(tmp_path)  # the prune runs on its own connection, as the shell command does
    make_user(app, "clin", "clinician")
    with app.app_context():
        film = add_prediction(User.by_username("clin").id, when=utcnow() - timedelta(days=400))
    client = app.test_client()
    AuthActions(client).login("clin")
    token = csrf_token(client, f"/predictions/{film}")
    accepted = routes.form_accepted

    def pruned_meanwhile(form, refused):
        # The reader's request has the film; the prune deletes it now, before the reading is written.
        def prune():
            with app.app_context():
                prune_predictions(utcnow() - timedelta(days=365), "older than 365 days")

        pruning = threading.Thread(target=prune)
        pruning.start()
        pruning.join(timeout=60)
        return accepted(form, refused)

    monkeypatch.setattr(routes, "form_accepted", pruned_meanwhile)
    answer = client.post(
        f"/predictions/{film}/feedback", data={"csrf_token": token, "label": "PNEUMONIA", "comment": "left lower lobe"}
    )

    assert answer.status_code == 303 and answer.headers["Location"].endswith("/history/")  # not a 410 page
    assert "This film was deleted while you had it open" in client.get(answer.headers["Location"]).get_data(
        as_text=True
    )
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Feedback)) == 0
        assert db.session.scalars(select(AuditEvent.action).where(AuditEvent.action == "predictions_pruned")).all()


def test_a_worklist_film_opened_as_it_is_pruned_leaves_no_read_behind(tmp_path, monkeypatch):
    app = threadable_app(tmp_path)
    make_user(app, "clin", "clinician")
    with app.app_context():
        film = add_prediction(None, source="dicom", when=utcnow() - timedelta(days=400))
    client = app.test_client()
    AuthActions(client).login("clin")
    marked = pacs_routes.WorklistRead

    def pruned_meanwhile(**columns):
        # The request has the film; the prune deletes it now, before the read is written.
        pruning = threading.Thread(target=lambda: _prune(app))
        pruning.start()
        pruning.join(timeout=60)
        return marked(**columns)

    monkeypatch.setattr(pacs_routes, "WorklistRead", pruned_meanwhile)
    answer = client.get(f"/worklist/{film}", headers={"Sec-Fetch-Site": "same-origin"})  # the reader's click

    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WorklistRead)) == 0  # SQLite: 1, of no film
    assert answer.status_code == 410  # PostgreSQL: the key error was taken for "read before", then a 404
    assert "This film was deleted while you had it open" in answer.get_data(as_text=True)


def _prune(app) -> None:
    with app.app_context():
        prune_predictions(utcnow() - timedelta(days=365), "older than 365 days")


def test_a_reading_sent_for_a_film_pruned_since_the_page_was_drawn_says_so(app, client, auth, clinician_user):
    """Found by the admin pages' review: the reader opened a batch's results, the nightly prune deleted
    one of its films, and Save review on it answered the bare 404 page ("There is nothing at this
    address"); the results page, reloaded, was a 404 too, for the films still there as well."""
    with app.app_context():
        old = add_prediction(clinician_user, when=utcnow() - timedelta(days=400))
        new = add_prediction(clinician_user)
    auth.login("clin")
    results = f"/screen/results?id={old}&id={new}"
    token = csrf_token(client, results)
    _prune(app)
    reading = {"csrf_token": token, "label": "NORMAL", "comment": "clear", "back": results}
    answer = client.post(f"/predictions/{old}/feedback", data=reading)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(results)
    page = client.get(answer.headers["Location"])
    said = page.get_data(as_text=True)
    assert page.status_code == 200 and "This film was deleted while you had it open" in said
    assert f"Film {old} of this page is no longer kept" in said and f'href="/predictions/{new}"' in said
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Feedback)) == 0
    # Sent from its own page, which is gone: the reader's history, with the same sentence.
    answer = client.post(f"/predictions/{old}/feedback", data={**reading, "back": ""})
    assert answer.headers["Location"].endswith("/history/")
    assert "This film was deleted while you had it open" in client.get(answer.headers["Location"]).get_data(
        as_text=True
    )
    # Every film of the page gone: the history says so, not a 404.
    gone = client.get(f"/screen/results?id={old}")
    assert gone.status_code == 303 and "is no longer kept" in client.get(gone.headers["Location"]).get_data(
        as_text=True
    )


def test_a_link_to_a_pruned_film_says_why_it_leads_nowhere(app, client, auth, clinician_user):
    """Found by the admin pages' review: a film's link on a history page drawn before the prune answered
    the bare "There is nothing at this address.", read as a wrong address."""
    with app.app_context():
        old = add_prediction(clinician_user, when=utcnow() - timedelta(days=400))
    auth.login("clin")
    _prune(app)
    for path in (f"/predictions/{old}", f"/predictions/{old}/print"):
        page = client.get(path)
        assert page.status_code == 404, path
        said = html.unescape(page.get_data(as_text=True))
        assert f"There is no film {old} (any longer): films are deleted past the site's retention period" in said
