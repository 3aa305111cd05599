"""A batch of results as a reader goes through it: most urgent first, and a one-line summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..inference.labels import NORMAL, PNEUMONIA, UNKNOWN
from ..models import Prediction

# Pneumonia first (the films to act on), then the films the model could not answer, then normal.
VERDICT_ORDER = (PNEUMONIA, UNKNOWN, NORMAL)


def reading_order(predictions: list[Prediction]) -> list[Prediction]:
    """By verdict, then by P(pneumonia) from the highest down: within NORMAL, the films closest
    to the threshold come first. The upload order breaks ties."""
    return sorted(predictions, key=lambda p: (VERDICT_ORDER.index(p.label), -p.p_pneumonia))


@dataclass(frozen=True)
class BatchSummary:
    total: int
    counts: list[tuple[str, int]]  # (verdict, count) in VERDICT_ORDER, verdicts with no film left out
    unknown_reasons: list[tuple[str, int]]  # (reason, count), most frequent first


def summarise(predictions: list[Prediction]) -> BatchSummary:
    counts = Counter(p.label for p in predictions)
    reasons = Counter(p.unknown_reason or "no reason recorded" for p in predictions if p.label == UNKNOWN)
    return BatchSummary(
        total=len(predictions),
        counts=[(label, counts[label]) for label in VERDICT_ORDER if counts[label]],
        unknown_reasons=reasons.most_common(),
    )
