"""The report's statistics against hand-computed cases and against an independent implementation
(training/metrics.py: trapezoidal ROC AUC, its own binning; the web app never imports it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics as reference
from webapp.inference.scores import rounded
from webapp.validation import metrics
from webapp.validation.report import figures, reason_category


def test_wilson_interval_by_hand():
    # 8 of 10: p = .8, z = 1.96; centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    low, high = metrics.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert metrics.wilson_interval(0, 0) is None
    low, high = metrics.wilson_interval(0, 5)
    assert low == 0.0 and high == pytest.approx(0.4345, abs=1e-4)
    assert metrics.wilson_interval(5, 5)[1] == 1.0


def test_auc_by_hand():
    # positives .9, .4 against negatives .6, .1: three of the four pairs are ordered right
    assert metrics.auc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == 0.75
    assert metrics.auc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts half
    assert metrics.auc([1, 1], [0.2, 0.3]) is None


@pytest.mark.parametrize("seed", range(5))
def test_auc_roc_and_ece_match_the_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(300) < 0.6
    # rounded scores: plenty of ties, where implementations most often disagree
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 1), 2)
    assert metrics.auc(truth, scores) == pytest.approx(reference.roc_auc(truth, scores), abs=1e-12)
    assert metrics.expected_calibration_error(truth, scores) == pytest.approx(
        reference.expected_calibration_error(truth, scores), abs=1e-12
    )
    fpr, tpr, thresholds = reference.roc_curve(truth, scores)
    ours = metrics.roc_points(truth, scores)
    assert np.allclose([p[1] for p in ours], fpr) and np.allclose([p[2] for p in ours], tpr)
    assert np.allclose([p[0] for p in ours[1:]], thresholds[1:])
    for threshold in (0.2, 0.5, 0.7):
        expected = reference.at_threshold(truth, scores, threshold)
        assert metrics.rates_at(truth, scores, threshold) == pytest.approx(
            (expected["sensitivity"], expected["specificity"])
        )


def test_operating_points_by_hand():
    truth = [1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.2, 0.3, 0.1]
    assert metrics.threshold_for_sensitivity(truth, scores, 0.75) == 0.7
    assert metrics.threshold_for_sensitivity(truth, scores, 1.0) == 0.2
    assert metrics.rates_at(truth, scores, 0.2) == (1.0, 0.5)
    assert metrics.youden_threshold(truth, scores) == 0.7  # J = .75 - 0


def test_bootstrap_interval_is_reproducible_and_brackets_the_auc():
    rng = np.random.default_rng(3)
    truth = rng.random(200) < 0.5
    scores = rng.normal(truth * 1.0, 1.0)
    low, high = metrics.bootstrap_auc_interval(truth, scores)
    assert low < metrics.auc(truth, scores) < high
    assert (low, high) == metrics.bootstrap_auc_interval(truth, scores)
    assert metrics.bootstrap_auc_interval([1, 1], [0.1, 0.2]) is None


def test_no_auc_interval_from_a_handful_of_films_of_one_class():
    """One pneumonia film among 100 normals gave an interval drawn from the normals alone."""
    rng = np.random.default_rng(4)
    truth = np.r_[np.ones(1, bool), np.zeros(100, bool)]
    scores = rng.random(101)
    assert metrics.bootstrap_auc_interval(truth, scores) is None
    truth = np.r_[np.ones(10, bool), np.zeros(100, bool)]
    assert metrics.bootstrap_auc_interval(truth, rng.random(110)) is not None


def test_report_figures_by_hand():
    truths = ["PNEUMONIA", "PNEUMONIA", "PNEUMONIA", "NORMAL", "NORMAL", "NORMAL"]
    scores = [0.9, 0.45, 0.2, 0.1, 0.6, 0.52]
    verdicts = ["PNEUMONIA", "UNKNOWN", "NORMAL", "NORMAL", "PNEUMONIA", "UNKNOWN"]
    result = figures(truths, scores, verdicts, 0.5, 0.05)
    assert result["n"] == 6 and result["unknown"] == 2 and result["unknown_rate"] == pytest.approx(1 / 3)
    # answered: one true positive, one false negative; one true negative, one false positive
    assert result["sensitivity"] == 0.5 and result["specificity"] == 0.5
    assert result["confusion"]["PNEUMONIA"] == {"NORMAL": 1, "PNEUMONIA": 1, "UNKNOWN": 1}
    assert result["confusion"]["NORMAL"] == {"NORMAL": 1, "PNEUMONIA": 1, "UNKNOWN": 1}
    # AUC over every scored film: of 9 pairs, .9 beats all 3, .45 beats .1, .2 beats .1
    assert result["auc"] == pytest.approx(5 / 9)
    names = [p["name"] for p in result["operating_points"]]
    assert names == ["in force", "sensitivity 0.95", "sensitivity 0.98", "max Youden J"]
    assert all(not math.isnan(p["threshold"]) for p in result["operating_points"])


def test_unknown_reasons_are_grouped_by_kind():
    assert reason_category("Uncertain: the pneumonia probability (0.41) is too close") == "Uncertain"
    assert reason_category(None) == "no reason given"


def test_population_stability_index_by_hand():
    reference = list(range(10))
    # two bins split at the median 4.5: reference shares .5/.5; current all in the lower bin (upper floored at 1e-4)
    expected = 0.5 * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert metrics.population_stability_index(reference, [0, 0, 0, 0], bins=2) == pytest.approx(expected)
    assert metrics.population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert metrics.population_stability_index([], [1.0]) is None


def test_no_auc_interval_when_the_classes_are_perfectly_separated():
    # 10 films a class, every pneumonia film above every normal one: each resample is separated too,
    # and the percentile interval was (1.0, 1.0), a certainty 20 films cannot give.
    truth = [1] * 10 + [0] * 10
    scores = list(np.linspace(0.6, 0.9, 10)) + list(np.linspace(0.1, 0.4, 10))
    assert metrics.auc(truth, scores) == 1.0
    assert metrics.bootstrap_auc_interval(truth, scores) is None
    assert metrics.bootstrap_auc_interval(truth, [1 - s for s in scores]) is None  # inverted: AUC 0
    scores[0] = 0.35  # one pneumonia film among the normals: the AUC is 0.98 and the interval real
    low, high = metrics.bootstrap_auc_interval(truth, scores)
    assert low < 0.98 <= high


def test_population_stability_index_sees_a_shift_off_a_tied_reference():
    # Every reference score is 0.5, so all nine quantile edges were 0.5 and its bin ran from 0.5 up:
    # a week scoring 0.9 throughout fell in the same bin and read PSI 0. 0.5 is now a bin of its own.
    psi = metrics.population_stability_index([0.5] * 100, [0.9] * 100)
    expected = 2 * (1 - 1e-4) * math.log(1 / 1e-4)  # all the share moves from one bin to another
    assert psi == pytest.approx(expected)
    assert psi > 0.25
    assert metrics.population_stability_index([0.5] * 100, [0.5] * 100) == 0.0
    # Half the reference tied at 1.0: the week moving that half to 0.99 is seen too.
    reference = list(np.linspace(0, 0.9, 100)) + [1.0] * 100
    assert metrics.population_stability_index(reference, list(np.linspace(0, 0.9, 100)) + [0.99] * 100) > 0.25
    # Untied scores keep the ten quantile bins they always had.
    rng = np.random.default_rng(3)
    continuous = rng.random(600)
    current = rng.random(150)
    edges = np.quantile(continuous, np.linspace(0, 1, 11)[1:-1])
    p = np.bincount(np.searchsorted(edges, continuous, side="right"), minlength=10) / 600
    q = np.bincount(np.searchsorted(edges, current, side="right"), minlength=10) / 150
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert metrics.population_stability_index(continuous, current) == pytest.approx(
        float(np.sum((q - p) * np.log(q / p)))
    )


def test_youden_ties_go_to_the_highest_threshold_despite_rounding():
    # 3 pneumonia, 6 normal films: at 0.93, J = 2/3 - 0; at 0.70, J = 1 - 2/6. Equal, but as floats the
    # second was larger by one ulp, and the proposal was 0.70 (specificity 0.67) instead of 0.93 (1.0).
    truth = [0, 0, 0, 0, 1, 0, 1, 0, 1]
    scores = [0.78, 0.78, 0.11, 0.06, 0.7, 0.61, 0.93, 0.65, 0.97]
    assert metrics.youden_threshold(truth, scores) == 0.93
    assert metrics.rates_at(truth, scores, 0.93) == (2 / 3, 1.0)


def test_each_operating_point_says_how_many_films_it_would_leave_unknown():
    # A site whose model scores pneumonia films 0.95-0.99: the most specific point reaching sensitivity
    # 0.95 sits at 0.952, where every film within the band of 0.05 is answered UNKNOWN in service. The
    # report showed only its sensitivity and specificity by score (95% and 100%), not that it would
    # leave every pneumonia film unanswered.
    truths = ["PNEUMONIA"] * 20 + ["NORMAL"] * 20
    scores = list(np.linspace(0.95, 0.99, 20)) + list(np.linspace(0.01, 0.90, 20))
    points = {p["name"]: p for p in figures(truths, scores, ["UNKNOWN"] * 40, 0.387, 0.05)["operating_points"]}
    proposal = points["sensitivity 0.95"]
    assert proposal["threshold"] == 0.952105 and proposal["sensitivity"] == 0.95  # scores[1], to 6 places
    assert proposal["uncertain_rate"] == pytest.approx(20 / 40)
    in_force = np.abs(np.array(scores) - 0.387) < 0.05
    assert points["in force"]["uncertain_rate"] == pytest.approx(in_force.mean())


def test_a_proposed_threshold_read_to_the_apis_places_keeps_the_proposals_figures():
    # The film that makes sensitivity 0.95 scores 0.2737557 (a site run on training films): the API gives
    # thresholds to 6 places, and 0.273756, adopted as read, lost that film (sensitivity 0.947, not 0.954).
    truths = ["PNEUMONIA"] * 20 + ["NORMAL"] * 20
    scores = [0.2737556962982057] + [0.9] * 18 + [0.01] + [0.05] * 20
    points = figures(truths, scores, ["NORMAL"] * 40, 0.5, 0.05)["operating_points"]
    for point in points[1:]:
        read = rounded(point["threshold"])  # what the API answers, and a client sends back to adopt it
        assert metrics.rates_at(np.array(truths) == "PNEUMONIA", scores, read) == (
            point["sensitivity"],
            point["specificity"],
        ), point
    proposal = {p["name"]: p for p in points}["sensitivity 0.95"]
    assert proposal["threshold"] == 0.273755 and proposal["sensitivity"] == 0.95


def test_a_proposal_below_the_apis_places_keeps_its_score_rather_than_zero():
    # Flooring 3e-7 to 6 places gives 0, which adoption refuses: the point keeps its own score.
    truths = ["PNEUMONIA"] * 20 + ["NORMAL"] * 20
    scores = [3e-7] + [0.9] * 19 + [0.0] * 20
    proposal = {p["name"]: p for p in figures(truths, scores, ["NORMAL"] * 40, 0.5, 0.05)["operating_points"]}
    assert proposal["sensitivity 0.98"]["threshold"] == 3e-7


def test_no_auc_interval_when_every_film_has_the_same_score():
    # 20 films a class all scoring 0.5 (a model that reads nothing): every resample is one tie, and the
    # percentile interval was (0.5, 0.5), as certain as the separated case above.
    truth = [1] * 20 + [0] * 20
    assert metrics.auc(truth, [0.5] * 40) == 0.5
    assert metrics.bootstrap_auc_interval(truth, [0.5] * 40) is None
