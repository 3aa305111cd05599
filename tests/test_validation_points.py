"""The report's operating points as a site reads them before adopting one: each rate with its interval,
and a plain warning when the run is too small to show the sensitivity a proposal is named for."""

from __future__ import annotations

import json

import pytest

from tests.factories import add_validation_run
from tests.helpers import issue_token, make_user
from webapp.extensions import db
from webapp.inference.model_card import read_card
from webapp.models import ValidationRun
from webapp.validation.report import figures


def run_with_figures(app, truths, scores, verdicts, threshold=0.5) -> int:
    """A finished run whose stored figures are report.figures() over these films (no films as rows:
    the report and the API read the stored figures)."""
    admin = make_user(app, "admin", "admin")
    with app.app_context():
        metrics = figures(truths, scores, verdicts, threshold, 0.05)
        metrics.update(unknown_reasons={}, refused=0, refused_files=[], films_in_archive=len(truths))
        metrics.update(duplicates=[], worst_errors=[])
        return add_validation_run(admin, threshold=threshold, metrics=metrics)


def fifty_and_fifty(app) -> int:
    # 49 of 50 pneumonia films score 0.9, one 0.1; the normals score 0.2: "sensitivity 0.98" is 49/50.
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    scores = [0.9] * 49 + [0.1] + [0.2] * 50
    verdicts = ["PNEUMONIA"] * 49 + ["NORMAL"] * 51
    return run_with_figures(app, truths, scores, verdicts)


def test_each_operating_point_has_wilson_intervals_in_the_api(app, client):
    run_id = fifty_and_fifty(app)
    token = issue_token(app, "admin")
    body = client.get(f"/api/v1/validation-runs/{run_id}", headers={"Authorization": f"Bearer {token}"}).get_json()
    points = {p["name"]: p for p in body["operating_points"]}
    point = points["sensitivity 0.98"]
    assert point["sensitivity"] == 0.98 and point["sensitivity_ci"] == pytest.approx([0.8950, 0.9965], abs=1e-4)
    assert point["specificity"] == 1.0 and point["specificity_ci"] == pytest.approx([0.9287, 1.0], abs=1e-4)
    assert point["target"] == 0.98 and point["short_of_target"] is True
    assert points["max Youden J"]["target"] is None and points["max Youden J"]["short_of_target"] is False
    assert points["in force"]["sensitivity_ci"] == pytest.approx([0.8950, 0.9965], abs=1e-4)


def test_the_report_says_when_a_proposal_may_fall_far_short_of_its_name(app, client, auth):
    run_id = fifty_and_fifty(app)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "98.0% (89.5&ndash;99.6%)" in html
    assert "could be as low as 89.5%" in html and 'id="shortfall"' in html


def test_a_large_enough_run_is_not_flagged(app, client, auth):
    # 980 of 1000 pneumonia films: Wilson lower bound 0.969, within 0.02 of 0.98.
    truths = ["PNEUMONIA"] * 1000 + ["NORMAL"] * 100
    scores = [0.9] * 980 + [0.1] * 20 + [0.2] * 100
    run_id = run_with_figures(app, truths, scores, ["UNKNOWN"] * 1100)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "98.0% (96.9&ndash;98.7%)" in html and 'id="shortfall"' not in html


def test_a_run_of_one_class_draws_no_roc_curve_and_says_why(app, client, auth):
    # Only normal films: every point of the "curve" has sensitivity 0, a flat line beside "AUC n/a".
    run_id = run_with_figures(app, ["NORMAL"] * 60, [i / 60 for i in range(60)], ["NORMAL"] * 60)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert 'aria-labelledby="roc-title"' not in html and 'id="roc-points"' not in html
    assert "No ROC curve and no AUC: all 60 scored films are normal." in html
    assert 'aria-labelledby="reliability-title"' in html  # the other chart still drawn


def test_the_two_sensitivities_at_the_threshold_in_force_are_told_apart(app, client, auth):
    # 40 pneumonia films answered PNEUMONIA (0.9); 10 answered UNKNOWN, scoring 0.48 just under the
    # threshold: the summary's sensitivity (answers) is 100%, the "in force" row's (scores) 80%.
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    scores = [0.9] * 40 + [0.48] * 10 + [0.1] * 50
    verdicts = ["PNEUMONIA"] * 40 + ["UNKNOWN"] * 10 + ["NORMAL"] * 50
    run_id = run_with_figures(app, truths, scores, verdicts)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    note = " ".join(html.split('id="in-force-note">', 1)[1].split("</p>", 1)[0].split())
    assert "<strong>100.0%</strong> in the summary is of the <em>answers</em>" in note
    assert '<strong>80.0%</strong> in the "in force" row is by <em>score</em>: of all 50 pneumonia films' in note
    assert "10 films were answered UNKNOWN" in note


def test_one_film_answered_unknown_is_one_film(app, client, auth):
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    verdicts = ["PNEUMONIA"] * 49 + ["UNKNOWN"] + ["NORMAL"] * 50
    run_id = run_with_figures(app, truths, [0.9] * 49 + [0.48] + [0.1] * 50, verdicts)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    assert "1 film was answered UNKNOWN." in " ".join(html.split())


def test_the_cards_figures_are_labelled_with_the_cards_threshold_not_the_runs(app, client, auth):
    # A run made while a site threshold of 0.2 was in force: the summary's row said "Sensitivity at
    # 0.200" across both columns, and the card's 97.7% beside it is at the card's threshold, 0.387.
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    run_id = run_with_figures(app, truths, [0.9] * 50 + [0.1] * 50, ["PNEUMONIA"] * 50 + ["NORMAL"] * 50, threshold=0.2)
    with app.app_context():
        card_threshold = read_card(app.config["MODEL_PATH"], verify=False)["threshold"]
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    summary = html.split('id="summary"', 1)[1].split("</table>", 1)[0]
    head, body = summary.split("<tbody>", 1)
    assert "This site, threshold 0.200" in head
    assert f"Model card (official test set), threshold {card_threshold:.3f}" in head
    assert "at 0.200" not in body  # a row's label covers both columns: no threshold of one column in it


def test_a_run_whose_films_all_score_alike_says_why_it_has_no_auc_interval(app, client, auth):
    truths = ["PNEUMONIA"] * 20 + ["NORMAL"] * 20
    run_id = run_with_figures(app, truths, [0.5] * 40, ["UNKNOWN"] * 40)
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    summary = html.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert "0.500&ndash;0.500" not in summary and "perfectly separated" not in summary
    assert "every film has the same score" in summary


def test_the_report_of_a_model_whose_card_has_no_test_figures_is_a_page_not_a_500(app, client, auth, tmp_path):
    # A card as training.train writes it has no metrics.test until training.evaluate --update-card: every
    # report page failed on pct(card.unknown_rate) with a 500. Its column now reads n/a.
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    run_id = run_with_figures(app, truths, [0.9] * 50 + [0.1] * 50, ["PNEUMONIA"] * 50 + ["NORMAL"] * 50)
    card = read_card(app.config["MODEL_PATH"], verify=False)
    card["metrics"].pop("test")
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "model_card.json").write_text(json.dumps(card))
    app.config["MODEL_PATH"] = tmp_path / "served" / "cxr_pneumonia.keras"
    auth.login("admin")
    response = client.get(f"/admin/validation/{run_id}")
    assert response.status_code == 200
    summary = response.get_data(as_text=True).split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert summary.count("n/a") >= 6  # the card's column, every row


def test_a_run_of_another_model_version_shows_no_card_figures_of_the_model_served_now(app, client, auth):
    # The card column was read from the weights served now: a run that measured an earlier model showed
    # the new model's official-test figures beside its own as if they were its model's.
    truths = ["PNEUMONIA"] * 50 + ["NORMAL"] * 50
    run_id = run_with_figures(app, truths, [0.9] * 50 + [0.1] * 50, ["PNEUMONIA"] * 50 + ["NORMAL"] * 50)
    with app.app_context():
        card = read_card(app.config["MODEL_PATH"], verify=False)
        db.session.get(ValidationRun, run_id).model_version = "2026.10.01-earlier"
        db.session.commit()
    auth.login("admin")
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert f"{card['metrics']['test']['auc']:.3f}" not in summary and ">624<" not in summary
    assert "this run measured model 2026.10.01-earlier" in summary and card["version"] in summary
