"""Weekly monitoring: counts, UNKNOWN reasons, agreement, and drift against the validation reference,
with the admin banner when the PSI passes the alert level."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from tests.factories import add_prediction, add_validation_run
from webapp.extensions import db
from webapp.models import Prediction, ValidationItem
from webapp.validation.metrics import population_stability_index
from webapp.validation.monitoring import PSI_ALERT
from webapp.validation.site import current_model_version


def reference_run(app, admin_user, films: int = 600, seed: int = 0) -> int:
    """A finished validation run whose films scored evenly over [0, 1]."""
    scores = np.random.default_rng(seed).random(films)
    items = (
        {
            "entry": "x",
            "truth": "NORMAL",
            "state": "done",
            "p_pneumonia": float(value),
            "chest_probability": 0.99,
            "feature_distance": float(value),
        }
        for value in scores
    )
    with app.app_context():
        return add_validation_run(admin_user, items, archive_name="ref.zip", threshold=0.5)


def add_week(app, user_id: int, scores, feedback=None) -> None:
    with app.app_context():
        version = current_model_version()
        for i, value in enumerate(scores):
            label = "UNKNOWN" if i % 10 == 0 else ("PNEUMONIA" if value >= 0.5 else "NORMAL")
            pid = add_prediction(user_id, label=label, version=version, when=datetime.now(UTC), feedback=feedback)
            row = db.session.get(Prediction, pid)
            row.p_pneumonia, row.chest_probability, row.feature_distance = float(value), 0.99, float(value)
        db.session.commit()


@pytest.fixture
def admin_client(client, auth, admin_user):
    auth.login("admin")
    return client


def test_a_week_like_the_reference_raises_no_alert(app, admin_client, admin_user):
    run_id = reference_run(app, admin_user)
    add_week(app, admin_user, np.random.default_rng(1).random(120), feedback="NORMAL")
    body = admin_client.get("/admin/validation/monitoring.json").get_json()
    assert body["reference_run_id"] == run_id and body["psi_alert_level"] == PSI_ALERT
    week = body["weeks"][-1]
    assert week["films"] == 120 and sum(week["verdicts"].values()) == 120
    assert week["unknown_rate"] == pytest.approx(0.1) and week["reviewed"] == 120
    assert 0 <= week["agreement"] <= 1
    assert max(week["psi"].values()) < PSI_ALERT and not week["drift_alert"]
    assert 'id="drift-banner"' not in admin_client.get("/admin/validation/monitoring").get_data(as_text=True)


def test_a_shifted_week_passes_the_alert_level_and_admins_see_a_banner(app, admin_client, admin_user):
    reference_run(app, admin_user)
    add_week(app, admin_user, 0.9 + 0.1 * np.random.default_rng(2).random(100))
    week = admin_client.get("/admin/validation/monitoring.json").get_json()["weeks"][-1]
    assert week["psi"]["p_pneumonia"] > PSI_ALERT and week["drift_alert"]
    page = admin_client.get("/admin/validation/monitoring").get_data(as_text=True)
    assert 'id="drift-banner"' in page and "PSI" in page
    assert 'id="drift-banner"' in admin_client.get("/screen").get_data(as_text=True)


def test_the_week_in_alert_says_so_in_words(app, admin_client, admin_user):
    """The week whose PSI passed the alert level was marked only by red text (the row's class): a
    colour-blind administrator could not tell it from the others (WCAG 1.4.1)."""
    reference_run(app, admin_user)
    add_week(app, admin_user, 0.9 + 0.1 * np.random.default_rng(2).random(100))
    page = admin_client.get("/admin/validation/monitoring").get_data(as_text=True)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page.split('id="monitoring"')[1], flags=re.S)
    this_week = re.sub(r"<[^>]+>", "", rows[1])
    assert "above the alert level" in this_week, this_week


def test_too_few_films_or_no_reference_give_no_statistic(app, admin_client, admin_user):
    add_week(app, admin_user, [0.95] * 99)
    body = admin_client.get("/admin/validation/monitoring.json").get_json()
    assert body["reference_run_id"] is None and body["weeks"][-1]["psi"] == {}
    reference_run(app, admin_user)
    assert admin_client.get("/admin/validation/monitoring.json").get_json()["weeks"][-1]["psi"] == {}
    add_week(app, admin_user, [0.95])  # the 100th film of the week
    assert admin_client.get("/admin/validation/monitoring.json").get_json()["weeks"][-1]["drift_alert"]
    assert admin_client.get("/admin/validation/monitoring.json?weeks=3").get_json()["weeks"][0]["films"] == 0


def test_a_small_validation_run_is_no_drift_reference(app, admin_client, admin_user):
    # A 20-film trial run scored like the weeks that follow: its own sampling noise alone put the PSI
    # above the alert level, and being the latest run it displaced the 600-film reference.
    run_id = reference_run(app, admin_user)
    reference_run(app, admin_user, films=20, seed=3)
    add_week(app, admin_user, np.random.default_rng(1).random(150))
    body = admin_client.get("/admin/validation/monitoring.json").get_json()
    assert body["reference_run_id"] == run_id
    assert max(body["weeks"][-1]["psi"].values()) < PSI_ALERT and not body["weeks"][-1]["drift_alert"]


def test_without_a_large_enough_run_there_is_no_reference(app, admin_client, admin_user):
    reference_run(app, admin_user, films=499)
    add_week(app, admin_user, [0.95] * 100)
    body = admin_client.get("/admin/validation/monitoring.json").get_json()
    assert body["reference_run_id"] is None and body["weeks"][-1]["psi"] == {}
    assert not body["weeks"][-1]["drift_alert"]


def test_clinicians_see_neither_page_nor_banner(app, client, auth, clinician_user, admin_user):
    reference_run(app, admin_user)
    add_week(app, clinician_user, [0.95] * 100)
    auth.login("clin")
    assert client.get("/admin/validation/monitoring.json").status_code == 403
    assert 'id="drift-banner"' not in client.get("/screen").get_data(as_text=True)


def test_the_apis_weeks_parameter_is_declared_and_checked(client, admin_token):
    """`weeks` was read behind the schema's back: missing from the OpenAPI document, and a word or a
    number out of range silently became 12 or was clamped, so a client never learned its mistake."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    assert len(client.get("/api/v1/monitoring?weeks=3", headers=headers).json["weeks"]) == 3
    assert len(client.get("/api/v1/monitoring", headers=headers).json["weeks"]) == 12
    for bad in ("abc", "0", "105", ""):
        response = client.get(f"/api/v1/monitoring?weeks={bad}", headers=headers)
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_filter", bad
    document = client.get("/api/v1/openapi.json", headers=headers).json["paths"]["/monitoring"]["get"]
    assert [(p["name"], p["in"], p["schema"]["maximum"]) for p in document["parameters"]] == [("weeks", "query", 104)]
    assert "400" in document["responses"]


def test_a_100_film_run_is_no_drift_reference(app, admin_client, admin_user):
    # A 100-film run was a reference: weeks of 100 films scored exactly like it passed the alert level
    # on one of the three scores in about half the weeks. Seed 8: this week's P(pneumonia) is one of them.
    run_id = reference_run(app, admin_user, films=100, seed=8)
    week = np.random.default_rng(9).random(100)
    with app.app_context():
        reference = [item.p_pneumonia for item in db.session.scalars(select(ValidationItem).filter_by(run_id=run_id))]
    assert population_stability_index(reference, week) > PSI_ALERT  # noise alone, same distribution
    add_week(app, admin_user, week)
    body = admin_client.get("/admin/validation/monitoring.json").get_json()
    assert body["reference_run_id"] is None and body["min_reference_films"] == 500
    assert body["weeks"][-1]["psi"] == {} and not body["weeks"][-1]["drift_alert"]
    page = admin_client.get("/admin/validation/monitoring").get_data(as_text=True)
    assert "at least 500 scored films: drift cannot be measured" in page


def test_unknown_answers_are_no_disagreement_and_are_counted_apart(app, admin_client, admin_user):
    """The model's UNKNOWN is no answer: a radiologist reading "pneumonia" on a film the model declined
    is not the model disagreeing. Counted as disagreement, a week of 6 right answers and 4 UNKNOWN
    films read agreement 60%."""
    with app.app_context():
        version = current_model_version()
        for label, reading in [("PNEUMONIA", "PNEUMONIA")] * 5 + [("NORMAL", "NORMAL"), ("NORMAL", "NOT_CXR")]:
            add_prediction(admin_user, label=label, version=version, when=datetime.now(UTC), feedback=reading)
        for reading in ("PNEUMONIA", "PNEUMONIA", "NORMAL", "NOT_CXR"):
            add_prediction(admin_user, label="UNKNOWN", version=version, when=datetime.now(UTC), feedback=reading)
        add_prediction(admin_user, label="UNKNOWN", version=version, when=datetime.now(UTC))  # not reviewed
    week = admin_client.get("/admin/validation/monitoring.json").get_json()["weeks"][-1]
    assert week["reviewed"] == 11 and week["reviewed_unknown"] == 4
    assert week["agreement"] == pytest.approx(6 / 7)
    html = admin_client.get("/admin/validation/monitoring").get_data(as_text=True)
    assert "85.7% of 7 answered films; 4 reviewed UNKNOWN, not counted" in html
    summary = admin_client.get("/admin/summary").get_data(as_text=True)
    assert f"<td>{version}</td><td>11</td><td>4</td><td>6</td><td>85.7%</td>" in summary


def test_a_week_whose_reviewed_films_were_all_unknown_has_no_agreement(app, admin_client, admin_user):
    with app.app_context():
        version = current_model_version()
        add_prediction(admin_user, label="UNKNOWN", version=version, when=datetime.now(UTC), feedback="PNEUMONIA")
    week = admin_client.get("/admin/validation/monitoring.json").get_json()["weeks"][-1]
    assert week["reviewed"] == 1 and week["reviewed_unknown"] == 1 and week["agreement"] is None
    html = admin_client.get("/admin/validation/monitoring").get_data(as_text=True)
    assert "no answered film reviewed; 1 reviewed UNKNOWN, not counted" in html
    assert "n/a</td>" in admin_client.get("/admin/summary").get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/validation/monitoring", "/admin/validation/monitoring.json"])
def test_monitoring_without_a_readable_model_card_says_so(app, admin_client, path):
    """With the model card unreadable (a broken MODEL_PATH) the page answered werkzeug's 503 text,
    "temporarily unable to service your request due to maintenance downtime or capacity problems"."""
    app.config["MODEL_PATH"] = str(app.instance_path) + "/no-such-model"
    response = admin_client.get(path)
    text = response.get_data(as_text=True)
    assert response.status_code == 503 and "The model card of this server cannot be read." in text
    assert "maintenance downtime" not in text
