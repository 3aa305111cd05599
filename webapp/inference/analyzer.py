"""The inference pipeline: decode -> preprocess -> forward -> calibrate -> decide.

An Analyzer is built once per worker process (TensorFlow is not fork-safe) and reused. It
reads every decision parameter (threshold, temperature, UNKNOWN policy, input size) from the
model card beside the .keras file, so the web app hard-codes none of them.
"""

from __future__ import annotations

import pathlib
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .batching import MicroBatcher
from .calibrate import class_probabilities, pneumonia_probability, sigmoid
from .decide import decide
from .image import DecodedImage
from .labels import PNEUMONIA, UNKNOWN
from .model_card import ServingParams, read_card
from .preprocess import preprocess


@dataclass(frozen=True)
class Analysis:
    label: str  # one of labels.VERDICTS
    probabilities: dict[str, float]  # calibrated, {NORMAL: p, PNEUMONIA: p}, sums to 1
    unknown_reason: str | None
    threshold: float
    model_version: str
    heatmap: np.ndarray  # float32 (input_size, input_size) in [0, 1]
    chest_probability: float  # the model's "frontal chest radiograph" score
    feature_distance: float  # how far the image's features lie from the training films'
    adult_probability: float | None = None  # the intended-use gate's score; None without a gate
    caution: str | None = None  # answered, but e.g. a header age outside the validated range


class Analyzer:
    def __init__(self, model_path: pathlib.Path, max_batch: int = 8, batch_window_ms: float = 0.0):
        """`max_batch`, `batch_window_ms`: how `analyze` calls made at the same time share a forward
        pass (batching.MicroBatcher); `analyze_batch` always runs the films it is given at once."""
        # Imported here so that merely importing the web app does not pull in TensorFlow.
        from .tensorflow_env import tensorflow

        tensorflow()  # first, so that Keras finds it imported quietly
        import keras

        from .forward import build_forward

        model_path = pathlib.Path(model_path)
        self.card = read_card(model_path)
        self.params = params = ServingParams.from_card(self.card)
        # The figures callers ask for most, without reaching into the card.
        self.input_size, self.model_version = params.input_size, params.version
        self.threshold, self.temperature = params.threshold, params.temperature
        self.model = keras.saving.load_model(model_path, compile=False)
        self._forward = build_forward(self.model, self.params.gradcam_layer)
        # Traced for one film and for several, so the first real batch does not pay a retrace.
        for size in (1, 2):
            self._forward(np.zeros((size, self.input_size, self.input_size, 1), np.float32))
        self.batcher = MicroBatcher(self.analyze_batch, max_batch, batch_window_ms / 1000.0, name="inference")

    def analyze(self, image: DecodedImage, threshold: float | None = None) -> Analysis:
        """One film's analysis, in one forward pass with any other film being analysed at this moment."""
        return self.batcher.run(image, threshold)

    def submit(self, image: DecodedImage, threshold: float | None = None) -> Future[Analysis]:
        """`analyze`, handed to the inference thread without waiting: the caller can do other work on the
        film meanwhile (the forward pass releases the interpreter lock) and then takes the result."""
        return self.batcher.submit(image, threshold)

    def analyze_batch(self, images: list[DecodedImage], threshold: float | None = None) -> list[Analysis]:
        """One forward pass for several films; `threshold` overrides the card's (a site operating point)."""
        params = self.params
        threshold = params.threshold if threshold is None else float(threshold)
        batch = np.stack([preprocess(image.pixels, params.input_size) for image in images])
        logits, distance, adult, cam_for, cam_against = (t.numpy() for t in self._forward(batch))
        gate = params.intended_use
        analyses = []
        for i, image in enumerate(images):
            p_pneumonia = pneumonia_probability(float(logits[i, 0]), params.temperature)
            p_chest = sigmoid(float(logits[i, 1]))
            p_adult = sigmoid(float(adult[i])) if gate is not None else None
            label, reason = decide(
                image, p_pneumonia, p_chest, float(distance[i]), threshold, params.policy, p_adult, gate
            )
            # The map explains the leaning of the score, also when the final answer is UNKNOWN.
            leaning = label == PNEUMONIA or (label == UNKNOWN and p_pneumonia >= threshold)
            analyses.append(
                Analysis(
                    label=label,
                    probabilities=class_probabilities(p_pneumonia),
                    unknown_reason=reason,
                    threshold=threshold,
                    model_version=params.version,
                    heatmap=(cam_for if leaning else cam_against)[i].astype(np.float32),
                    chest_probability=p_chest,
                    feature_distance=float(distance[i]),
                    adult_probability=p_adult,
                    caution=gate.caution(image) if gate is not None and label != UNKNOWN else None,
                )
            )
        return analyses
