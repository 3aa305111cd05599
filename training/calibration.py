"""Calibration on validation data only (temperature, threshold, UNKNOWN cut-offs), then export.

The last step of both `training.train` and `training.ensemble`.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import tensorflow as tf

from training import metrics, ood
from training.export import export
from training.model import GRADCAM_LAYER, OUTPUT_COLUMNS
from training.sets import TrainingSets
from webapp.inference.model_card import ASPECT_RATIO_LIMITS


def outputs_of(model, images, batch: int = 128) -> list[np.ndarray]:
    """Every output of the model for many images, batched, inference mode."""
    infer = tf.function(lambda x: model(x, training=False))
    chunks = [infer(images[i : i + batch]) for i in range(0, len(images), batch)]
    chunks = [c if isinstance(c, (list, tuple)) else [c] for c in chunks]
    if not chunks:
        return [np.zeros((0, len(OUTPUT_COLUMNS)), np.float32)]
    return [np.concatenate([c[k].numpy() for c in chunks]) for k in range(len(chunks[0]))]


def logits_of(model, images) -> np.ndarray:
    return outputs_of(model, images)[0]


def calibrate(model, sets: TrainingSets, x_val_shifted, args) -> dict:
    """Temperature, threshold and UNKNOWN parameters, from validation data only."""
    y = sets.y_val
    (val, val_w), (shifted, shifted_w), (other, other_w) = (
        outputs_of(model, x) for x in (sets.x_val, x_val_shifted, sets.x_other_val)
    )
    val_d, shifted_d, other_d = ood.distances(val_w), ood.distances(shifted_w), ood.distances(other_w)
    # The patient split is nearly separable, so fitting on it alone would sharpen the scores;
    # fitting on the clean and shifted copies together stands in for an unseen hospital.
    both_y = np.r_[y, y]
    both_logits = np.r_[val[:, 0], shifted[:, 0]]
    temperature = metrics.fit_temperature(both_y, both_logits)
    probs = metrics.sigmoid(both_logits / temperature)
    threshold = metrics.screening_threshold(both_y, probs, args.min_sensitivity)
    # The widest band (at most 0.05) that still keeps all but 1% of validation films answered.
    distance = np.sort(np.abs(probs - threshold))
    band = float(min(0.05, distance[int(0.01 * distance.size)]))
    # Chest-head cut-off: a low one, as long as at most 0.5% of validation films fall below it.
    chest = metrics.sigmoid(np.r_[val[:, 1], shifted[:, 1]])
    min_chest = float(min(0.5, np.quantile(chest, 0.005)))
    other_chest = metrics.sigmoid(other[:, 1])
    # Feature-distance cut-off: again at most 0.5% of validation films (clean and shifted) beyond it.
    max_distance = float(np.quantile(np.r_[val_d, shifted_d], 0.995))
    rejected = (other_chest < min_chest) | (other_d > max_distance)
    val_probs = metrics.sigmoid(val[:, 0] / temperature)
    shifted_probs = metrics.sigmoid(shifted[:, 0] / temperature)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "unknown": {
            "max_colourfulness": 0.03,
            "min_aspect_ratio": ASPECT_RATIO_LIMITS[0],
            "max_aspect_ratio": ASPECT_RATIO_LIMITS[1],
            "min_chest_probability": min_chest,
            "uncertainty_band": band,
            "max_feature_distance": max_distance,
        },
        "validation": {
            "films": metrics.summary(y, val_probs, threshold),
            "films_shifted": metrics.summary(y, shifted_probs, threshold),
            "films_in_uncertainty_band": float((np.abs(val_probs - threshold) < band).mean()),
            "films_below_chest_cutoff": float((metrics.sigmoid(val[:, 1]) < min_chest).mean()),
            "films_beyond_feature_distance": float((val_d > max_distance).mean()),
            "held_out_not_chest_rejected_by_chest_head": float((other_chest < min_chest).mean())
            if len(other)
            else None,
            "held_out_not_chest_rejected_by_feature_distance": float((other_d > max_distance).mean())
            if len(other)
            else None,
            "held_out_not_chest_rejected_by_model": float(rejected.mean()) if len(other) else None,
            "temperature_fitted_on": "validation films plus their shifted copy",
        },
    }


def calibrate_and_export(model, sets: TrainingSets, x_val_shifted, args, history, command, started, **settings):
    """Calibrate `model` on validation, print the validation figures, and export it with its card."""
    calibration = calibrate(model, sets, x_val_shifted, args)
    print(json.dumps(calibration["validation"]), flush=True)
    run_settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    run_settings.update(settings)
    return export(
        model,
        args,
        calibration,
        sets.summary,
        history,
        run_settings,
        command,
        time.time() - started,
        gradcam_layer=GRADCAM_LAYER,
    )
