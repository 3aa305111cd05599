"""How precisely a score (a probability, or a threshold on one) is given wherever it leaves the app.

One number of places for the API's answers, the history CSV and the DICOM result, probabilities and
thresholds alike: a probability shown beside the threshold it was compared with reads to the same
precision, and more digits say nothing about a calibrated score.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

PLACES = 6


def rounded(score: float) -> float:
    """For JSON and DICOM: the number itself, rounded."""
    return round(float(score), PLACES)


def score_text(score: float) -> str:
    """For the CSV: fixed-point, always PLACES digits (never 1e-05)."""
    return f"{float(score):.{PLACES}f}"


def floored(threshold: float) -> float:
    """The largest number of PLACES places not above `threshold`. A threshold proposed at a film's score
    is given out as this, so that the number a client reads and sends back still calls that film
    positive: rounded to nearest, 0.2737557 went out as 0.273756 and adopting it lost the film."""
    # Decimal(float) is the float's exact value, so the floor is exact; the float nearest it is not above it.
    return float(Decimal(threshold).quantize(Decimal(1).scaleb(-PLACES), rounding=ROUND_FLOOR))
