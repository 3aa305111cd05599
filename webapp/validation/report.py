"""A finished run's figures, computed once from its items and stored on the run (ValidationRun.metrics).

Scored films are those the pipeline could read (state done); refused films are listed apart.
AUC, the ROC curve, calibration and the proposed operating points use the calibrated
probability of every scored film, UNKNOWN ones included (the model scores them too); the
sensitivity and specificity of the verdicts at the threshold in force count answered films
only (NORMAL or PNEUMONIA), and UNKNOWN is reported as its own rate.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sqlalchemy import select

from ..extensions import db
from ..inference.labels import NORMAL, PNEUMONIA, UNKNOWN, VERDICTS
from ..inference.scores import floored
from ..models import ITEM_DONE, ITEM_REFUSED, ValidationItem, ValidationRun
from . import metrics

TARGET_SENSITIVITIES = (0.95, 0.98)
# A proposal named for a target sensitivity is flagged on the report when the lower end of its
# sensitivity's 95% interval lies more than this below the target: 49 of 50 pneumonia films is
# "sensitivity 0.98" with a lower bound of 0.895, five times the misses the name promises.
SHORTFALL_FLAGGED = 0.02
ROC_POINTS_KEPT = 300
WORST_ERRORS = 12
REFUSED_LISTED = 500
DUPLICATES_LISTED = 500


def reason_category(reason: str | None) -> str:
    """The kind of an UNKNOWN answer: the reason's words before the colon ("Uncertain", ...)."""
    return (reason or "no reason given").split(":", 1)[0].strip()


def run_metrics(run: ValidationRun, uncertainty_band: float) -> dict:
    rows = db.session.execute(
        select(
            ValidationItem.id,
            ValidationItem.entry,
            ValidationItem.truth,
            ValidationItem.state,
            ValidationItem.label,
            ValidationItem.p_pneumonia,
            ValidationItem.unknown_reason,
            ValidationItem.refusal,
            ValidationItem.sha256,
        )
        .where(ValidationItem.run_id == run.id)
        .order_by(ValidationItem.id)
    ).all()
    scored = [r for r in rows if r.state == ITEM_DONE]
    refused = [r for r in rows if r.state == ITEM_REFUSED]
    result = figures(
        [r.truth for r in scored],
        [r.p_pneumonia for r in scored],
        [r.label for r in scored],
        run.threshold,
        uncertainty_band,
    )
    result["unknown_reasons"] = dict(Counter(reason_category(r.unknown_reason) for r in scored if r.label == UNKNOWN))
    result["refused"] = len(refused)
    result["refused_files"] = [{"entry": r.entry, "reason": r.refusal} for r in refused[:REFUSED_LISTED]]
    result["films_in_archive"] = len(rows)
    result["duplicates"] = duplicates(scored)
    wrong = [r for r in scored if r.label in (NORMAL, PNEUMONIA) and r.label != r.truth]
    wrong.sort(key=lambda r: -abs((r.truth == PNEUMONIA) - r.p_pneumonia))
    result["worst_errors"] = [r.id for r in wrong[:WORST_ERRORS]]
    return result


def figures(
    truths: list[str], scores: list[float], verdicts: list[str], threshold: float, uncertainty_band: float
) -> dict:
    """Every figure of the report from the scored films' truths, probabilities and verdicts;
    `uncertainty_band` is the model's (films this close to a threshold are answered UNKNOWN)."""
    truth = np.array([t == PNEUMONIA for t in truths], bool)
    score = np.array(scores, np.float64)
    verdict = np.array(verdicts, object)
    answered = verdict != UNKNOWN
    called = verdict == PNEUMONIA
    tp = int((answered & called & truth).sum())
    fn = int((answered & ~called & truth).sum())
    tn = int((answered & ~called & ~truth).sum())
    fp = int((answered & called & ~truth).sum())
    n = int(truth.size)
    roc = metrics.roc_points(truth, score)
    keep = np.unique(np.linspace(0, len(roc) - 1, min(len(roc), ROC_POINTS_KEPT)).astype(int))
    return {
        "n": n,
        "classes": {NORMAL: int((~truth).sum()), PNEUMONIA: int(truth.sum())},
        "threshold": threshold,
        "answered": int(answered.sum()),
        "unknown": int((~answered).sum()),
        "unknown_rate": float((~answered).mean()) if n else None,
        "auc": metrics.auc(truth, score),
        "auc_ci": metrics.bootstrap_auc_interval(truth, score),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "sensitivity_ci": metrics.wilson_interval(tp, tp + fn),
        "specificity": tn / (tn + fp) if tn + fp else None,
        "specificity_ci": metrics.wilson_interval(tn, tn + fp),
        "confusion": {
            t: {v: int(((truth == (t == PNEUMONIA)) & (verdict == v)).sum()) for v in VERDICTS}
            for t in (NORMAL, PNEUMONIA)
        },
        "ece": metrics.expected_calibration_error(truth, score),
        "reliability": metrics.reliability(truth, score),
        "roc": [[roc[i][1], roc[i][2]] for i in keep],
        "operating_points": operating_points(truth, score, threshold, uncertainty_band),
    }


def operating_points(truth: np.ndarray, score: np.ndarray, threshold: float, uncertainty_band: float) -> list[dict]:
    """The threshold in force and the proposals: the most specific points reaching each target
    sensitivity, and the one with the largest Youden J (sensitivity + specificity - 1). Each says
    what share of the films score within the model's uncertainty band of it: in service those are
    answered UNKNOWN ("Uncertain"), which a point's sensitivity and specificity (every film by its
    score) do not show: a point at 0.95 would leave most pneumonia films unanswered. A proposal's
    threshold is its film's score floored to the places the API gives (scores.floored), and its figures
    are counted at that number: the one an administrator reads and adopts."""
    candidates = [("in force", threshold)]
    candidates += [
        (f"sensitivity {t:.2f}", metrics.threshold_for_sensitivity(truth, score, t)) for t in TARGET_SENSITIVITIES
    ]
    candidates.append(("max Youden J", metrics.youden_threshold(truth, score)))
    points = []
    for name, value in candidates:
        if value is None:
            continue
        if name != "in force":
            # Below 10**-PLACES the floor is 0, which no site may adopt: such a point keeps its score.
            value = floored(value) or value
        sensitivity, specificity = metrics.rates_at(truth, score, value)
        uncertain = float((np.abs(score - value) < uncertainty_band).mean()) if score.size else None
        points.append(
            {
                "name": name,
                "threshold": float(value),
                "sensitivity": sensitivity,
                "specificity": specificity,
                "uncertain_rate": uncertain,
            }
        )
    return points


def points_with_intervals(figures: dict) -> list[dict]:
    """A run's operating points, each sensitivity and specificity with its Wilson 95% interval (the
    one metrics.wilson_interval of the headline figures) and, for a proposal named for a target
    sensitivity, `target` and `short_of_target` (the interval's lower end more than SHORTFALL_FLAGGED
    below it). Worked out on reading from the films behind each rate (a rate is a count over a class),
    so runs stored before the intervals existed show them too."""
    pneumonia, normal = figures["classes"][PNEUMONIA], figures["classes"][NORMAL]
    targets = {f"sensitivity {t:.2f}": t for t in TARGET_SENSITIVITIES}
    points = []
    for point in figures.get("operating_points", []):
        sensitivity_ci = _interval(point["sensitivity"], pneumonia)
        target = targets.get(point["name"])
        short = target is not None and sensitivity_ci is not None and sensitivity_ci[0] < target - SHORTFALL_FLAGGED
        points.append(
            {
                **point,
                "sensitivity_ci": sensitivity_ci,
                "specificity_ci": _interval(point["specificity"], normal),
                "target": target,
                "short_of_target": short,
            }
        )
    return points


def _interval(rate: float | None, films: int) -> tuple[float, float] | None:
    return None if rate is None else metrics.wilson_interval(round(rate * films), films)


def duplicates(scored) -> list[dict]:
    """Scored films whose bytes are those of an earlier film of the run (the same film exported twice):
    each is counted again in every figure, and under both labels when the copies disagree. The report
    names them so the site can judge; the figures keep them, as the archive said."""
    first: dict[str, object] = {}
    found = []
    for row in scored:
        earlier = first.setdefault(row.sha256, row)
        if earlier is not row:
            found.append({"entry": row.entry, "same_as": earlier.entry, "labels_differ": row.truth != earlier.truth})
    return found[:DUPLICATES_LISTED]
