"""Diagnostic-accuracy statistics for a validation run, and the model's agreement with radiologists'
readings, in plain NumPy (no Flask, no training code).

Conventions: `truth` is 1 for PNEUMONIA and 0 for NORMAL; `scores` are calibrated P(pneumonia);
a film is called positive when its score is >= the threshold. reading_agreement pairs verdicts with
readings instead.
"""

from __future__ import annotations

import math

import numpy as np

from ..inference.labels import NORMAL, PNEUMONIA, UNKNOWN

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None without observations."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def auc(truth, scores) -> float | None:
    """ROC AUC as the Mann-Whitney probability that a positive outscores a negative (ties count half)."""
    truth = np.asarray(truth, bool)
    scores = np.asarray(scores, np.float64)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return None
    ranks = _average_ranks(scores)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    return mean_rank[inverse]


# Below this many films of either class a percentile bootstrap only re-draws the few films there
# are (one pneumonia film: every resample is that film, and the interval reflects the normals alone).
MIN_FILMS_PER_CLASS_FOR_INTERVAL = 10


def bootstrap_auc_interval(
    truth, scores, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUC, resampling films within each class (so every
    resample has both classes); seeded, so a report reads the same every time it is drawn. None
    when a class has fewer than MIN_FILMS_PER_CLASS_FOR_INTERVAL films: no interval rather than
    a falsely narrow one. None too when the AUC is 0 or 1: with the classes perfectly separated every
    resample is separated as well, and the interval would be a point (1.000-1.000), claiming
    certainty that 10 or 20 films cannot give. None too when every film has the same score: every
    resample is one tie, and the interval read 0.500-0.500."""
    truth = np.asarray(truth, bool)
    scores = np.asarray(scores, np.float64)
    pos, neg = scores[truth], scores[~truth]
    if min(pos.size, neg.size) < MIN_FILMS_PER_CLASS_FOR_INTERVAL or auc(truth, scores) in (0.0, 1.0):
        return None
    if np.ptp(scores) == 0:
        return None
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    values = np.empty(resamples)
    for i in range(resamples):
        sample = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        values[i] = auc(labels, sample)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def roc_points(truth, scores) -> list[tuple[float, float, float]]:
    """(threshold, false-positive rate, true-positive rate) at every distinct score, highest first,
    after a starting point (inf, 0, 0)."""
    truth = np.asarray(truth, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.array([], int)
    tp = np.cumsum(truth)[last_of_each]
    fp = last_of_each + 1 - tp
    p, n = max(int(truth.sum()), 1), max(int((~truth).sum()), 1)
    points = [(math.inf, 0.0, 0.0)]
    points += [(float(scores[i]), float(f / n), float(t / p)) for i, t, f in zip(last_of_each, tp, fp, strict=True)]
    return points


def rates_at(truth, scores, threshold: float) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) when films scoring >= threshold are called positive."""
    truth = np.asarray(truth, bool)
    called = np.asarray(scores, np.float64) >= threshold
    sensitivity = float(called[truth].mean()) if truth.any() else None
    specificity = float((~called[~truth]).mean()) if (~truth).any() else None
    return sensitivity, specificity


def threshold_for_sensitivity(truth, scores, target: float) -> float | None:
    """The highest threshold whose sensitivity reaches `target` (the most specific such point)."""
    for threshold, _, tpr in roc_points(truth, scores)[1:]:
        if tpr >= target - 1e-12:
            return threshold
    return None


def youden_threshold(truth, scores) -> float | None:
    """The threshold maximising sensitivity + specificity - 1 (the highest one among ties)."""
    truth = np.asarray(truth, bool)
    points = roc_points(truth, scores)[1:]
    if not points or not truth.any() or truth.all():
        return None
    positives, negatives = int(truth.sum()), int((~truth).sum())

    # J times positives x negatives, in integers: as floats 1 - 1/3 exceeded 2/3 - 0 by one ulp, and the
    # tie went to the lower, less specific threshold.
    def scaled_j(point: tuple[float, float, float]) -> int:
        return round(point[2] * positives) * negatives - round(point[1] * negatives) * positives

    return max(points, key=lambda point: (scaled_j(point), point[0]))[0]


def reliability(truth, scores, bins: int = 15) -> list[dict]:
    """Per equal-width bin of the score: mean predicted probability, observed frequency, count."""
    truth = np.asarray(truth, np.float64)
    scores = np.asarray(scores, np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=scores, minlength=bins)
    observed = np.bincount(index, weights=truth, minlength=bins)
    return [
        {"predicted": float(predicted[b] / counts[b]), "observed": float(observed[b] / counts[b]), "n": int(counts[b])}
        for b in np.flatnonzero(counts)
    ]


def expected_calibration_error(truth, scores, bins: int = 15) -> float | None:
    """ECE: the count-weighted mean gap between predicted and observed frequency over the bins."""
    n = len(scores)
    if not n:
        return None
    return float(
        sum(row["n"] / n * abs(row["predicted"] - row["observed"]) for row in reliability(truth, scores, bins))
    )


def population_stability_index(reference, current, bins: int = 10, floor: float = 1e-4) -> float | None:
    """PSI of `current` against `reference` over the reference's quantile bins:
    sum((q - p) * ln(q / p)), with each bin's share floored so an empty bin stays finite.
    A value the reference holds so often that several quantiles fall on it gets a bin of its own:
    merged into the bin above, a week whose scores all moved off it and upwards (every reference
    film 0.5, every film of the week 0.9) read PSI 0."""
    reference = np.asarray(reference, np.float64)
    current = np.asarray(current, np.float64)
    if reference.size == 0 or current.size == 0:
        return None
    quantiles, repeats = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]), return_counts=True)
    # With side="right" below, the bin [v, nextafter(v)) holds exactly the films scoring v.
    edges = np.union1d(quantiles, np.nextafter(quantiles[repeats > 1], np.inf))
    p = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1) / reference.size
    q = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1) / current.size
    p, q = np.maximum(p, floor), np.maximum(q, floor)
    return float(np.sum((q - p) * np.log(q / p)))


# The model's verdict that agrees with each radiologist reading.
VERDICT_FOR_READING = {NORMAL: NORMAL, PNEUMONIA: PNEUMONIA, "NOT_CXR": UNKNOWN}


def reading_agreement(pairs) -> dict:
    """Agreement of the model with the radiologists over (model verdict, radiologist reading) pairs.
    An UNKNOWN answer is no answer: the model declined the film, so it neither agrees nor disagrees
    (counted as disagreement, a week of "Uncertain" films read as pneumonia looked like a model that
    misreads them); such films are counted apart as `reviewed_unknown`. The validation report counts
    answered films only in the same way. A film the model answered and the radiologist read as not a
    chest radiograph is a disagreement."""
    reviewed = unknown = agreed = 0
    for verdict, reading in pairs:
        reviewed += 1
        if verdict == UNKNOWN:
            unknown += 1
        else:
            agreed += VERDICT_FOR_READING[reading] == verdict
    answered = reviewed - unknown
    return {
        "reviewed": reviewed,
        "reviewed_unknown": unknown,
        "agreed": agreed,
        "agreement": agreed / answered if answered else None,
    }
