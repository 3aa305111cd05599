"""The inference pipeline behind the web app: preprocess -> classify -> explain -> decide.

An Analyzer is built once per worker process (TensorFlow is not fork-safe) and reused. It
reads every decision parameter (threshold, temperature, UNKNOWN policy, input size) from the
model card beside the .keras file, so the web app hard-codes none of them.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass

import numpy as np

from .classify import class_probabilities, pneumonia_probability, sigmoid
from .decide import PNEUMONIA, UNKNOWN, UnknownPolicy, decide
from .decode import DecodedImage
from .intended_use import IntendedUse
from .preprocess import preprocess

CARD_NAME = "model_card.json"


class ModelCardError(RuntimeError):
    """The model file and its card do not belong together, or the card is incomplete."""


@dataclass(frozen=True)
class Analysis:
    label: str  # "NORMAL" | "PNEUMONIA" | "UNKNOWN"
    probabilities: dict[str, float]  # calibrated, {"NORMAL": p, "PNEUMONIA": p}, sums to 1
    unknown_reason: str | None
    threshold: float
    model_version: str
    heatmap: np.ndarray  # float32 (input_size, input_size) in [0, 1]
    chest_probability: float  # the model's "frontal chest radiograph" score
    feature_distance: float  # how far the image's features lie from the training films'
    adult_probability: float | None = None  # the intended-use gate's score; None without a gate
    caution: str | None = None  # answered, but e.g. a header age outside the validated range


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(model_path: pathlib.Path) -> dict:
    card_path = model_path.parent / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"cannot read the model card {card_path}: {exc}") from exc
    expected = card.get("sha256")
    if expected and expected != sha256_of(model_path):
        raise ModelCardError(f"{model_path.name} does not match the sha256 in {card_path}")
    return card


class Analyzer:
    def __init__(self, model_path: pathlib.Path):
        # Imported here so that merely importing the web app does not pull in TensorFlow.
        import keras

        from .explain import build_explained_forward

        model_path = pathlib.Path(model_path)
        self.card = load_card(model_path)
        try:
            self.input_size = int(self.card["input"]["size"])
            self.model_version = str(self.card["version"])
            self.threshold = float(self.card["threshold"])
            self.temperature = float(self.card["temperature"])
            self.policy = UnknownPolicy.from_card(self.card)
            self.intended_use = IntendedUse.from_card(self.card)
            layer = self.card["input"]["gradcam_layer"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(f"the model card is missing or has a bad field: {exc}") from exc
        self.model = keras.saving.load_model(model_path, compile=False)
        self._forward = build_explained_forward(self.model, layer)
        self._forward(np.zeros((1, self.input_size, self.input_size, 1), np.float32))

    def analyze(self, image: DecodedImage) -> Analysis:
        batch = preprocess(image.pixels, self.input_size)[None]
        logits, distance, adult, cam_for, cam_against = (t.numpy() for t in self._forward(batch))
        p_pneumonia = pneumonia_probability(float(logits[0, 0]), self.temperature)
        p_chest = sigmoid(float(logits[0, 1]))
        p_adult = sigmoid(float(adult[0])) if self.intended_use is not None else None
        label, reason = decide(image, p_pneumonia, p_chest, float(distance[0]), self.threshold, self.policy,
                               p_adult, self.intended_use)
        caution = self.intended_use.caution(image) if self.intended_use is not None and label != UNKNOWN else None
        # The map explains the leaning of the score, also when the final answer is UNKNOWN.
        leaning = label == PNEUMONIA or (label == UNKNOWN and p_pneumonia >= self.threshold)
        heatmap = (cam_for if leaning else cam_against)[0].astype(np.float32)
        return Analysis(
            label=label,
            probabilities=class_probabilities(p_pneumonia),
            unknown_reason=reason,
            threshold=self.threshold,
            model_version=self.model_version,
            heatmap=heatmap,
            chest_probability=p_chest,
            feature_distance=float(distance[0]),
            adult_probability=p_adult,
            caution=caution,
        )
