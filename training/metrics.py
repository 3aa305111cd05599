"""Metrics in plain NumPy (no extra dependency): ROC/AUC, operating-point figures,
calibration error, temperature fitting and threshold choice."""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def roc_curve(labels, scores):
    """False- and true-positive rates at every distinct score, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
    tps = np.cumsum(labels)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(labels.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~labels).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, scores[distinct]]


def roc_auc(labels, scores) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def at_threshold(labels, probs, threshold: float) -> dict:
    labels = np.asarray(labels, bool)
    predicted = np.asarray(probs) >= threshold
    tp = int((predicted & labels).sum())
    tn = int((~predicted & ~labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return {
        "accuracy": (tp + tn) / max(labels.size, 1),
        "sensitivity": tp / max(tp + fn, 1),
        "specificity": tn / max(tn + fp, 1),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def reliability(labels, probs, bins: int = 15):
    """Per equal-width bin of P(pneumonia): (mean predicted, observed frequency, count)."""
    labels = np.asarray(labels, np.float64)
    probs = np.asarray(probs, np.float64)
    index = np.minimum((probs * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append((float(probs[mask].mean()), float(labels[mask].mean()), int(mask.sum())))
    return rows


def expected_calibration_error(labels, probs, bins: int = 15) -> float:
    """ECE of P(pneumonia) over equal-width bins, weighted by bin size."""
    n = max(len(labels), 1)
    return float(sum(count / n * abs(pred - obs) for pred, obs, count in reliability(labels, probs, bins)))


def nll(labels, probs) -> float:
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def fit_temperature(labels, logits) -> float:
    """The temperature minimising the negative log-likelihood (log-spaced grid search)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(10.0), 400))
    losses = [nll(labels, sigmoid(np.asarray(logits) / t)) for t in grid]
    return float(grid[int(np.argmin(losses))])


def screening_threshold(labels, probs, min_sensitivity: float) -> float:
    """The highest threshold that still reaches the target sensitivity (the most specific
    operating point of a screening test)."""
    positives = np.sort(np.asarray(probs)[np.asarray(labels, bool)])
    allowed_misses = int(np.floor((1.0 - min_sensitivity) * positives.size))
    return float(positives[allowed_misses])


def summary(labels, probs, threshold: float) -> dict:
    out = {"n": int(len(labels)), "auc": roc_auc(labels, probs), "ece": expected_calibration_error(labels, probs)}
    out.update(at_threshold(labels, probs, threshold))
    out["threshold"] = threshold
    return out
