"""How precisely a score (a probability, or a threshold on one) is given wherever it leaves the app.

One number of places for the API's answers, the history CSV and the DICOM result, probabilities and
thresholds alike: a probability shown beside the threshold it was compared with reads to the same
precision, and more digits say nothing about a calibrated score.
"""

from __future__ import annotations

PLACES = 6


def rounded(score: float) -> float:
    """For JSON and DICOM: the number itself, rounded."""
    return round(float(score), PLACES)


def score_text(score: float) -> str:
    """For the CSV: fixed-point, always PLACES digits (never 1e-05)."""
    return f"{float(score):.{PLACES}f}"
