"""Stage 4: calibrate. The model's raw logits to calibrated class probabilities.

The model emits logits; the card carries the temperature fitted on validation data. Dividing
the logit by it before the sigmoid keeps the ranking (and so the ROC curve) unchanged while
making a "0.9" mean roughly nine in ten.
"""

from __future__ import annotations

import math

from .labels import NORMAL, PNEUMONIA


def sigmoid(value: float) -> float:
    # Split by sign so large logits never overflow math.exp.
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    z = math.exp(value)
    return z / (1.0 + z)


def pneumonia_probability(logit: float, temperature: float) -> float:
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    return sigmoid(logit / temperature)


def class_probabilities(p_pneumonia: float) -> dict[str, float]:
    return {NORMAL: 1.0 - p_pneumonia, PNEUMONIA: p_pneumonia}
