"""Out-of-distribution score on the penultimate features (a Mahalanobis distance).

The chest_xray head learns from the negatives we could show it; this score needs no negatives:
it measures how far an image's pooled features lie from those of the training chest films.
The whitening is folded into one Dense layer of the shipped model, so serving computes the
distance as the mean square of that layer's output, with no extra file or custom layer.
"""

from __future__ import annotations

import keras
import numpy as np

FEATURE_LAYER = "pool"
WHITENING_LAYER = "feature_whitening"


def feature_model(model: keras.Model) -> keras.Model:
    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)


def fit_whitening(features: np.ndarray, shrinkage: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias with ||(f @ kernel + bias)||^2 = Mahalanobis^2 of f, on a shrunk covariance."""
    features = np.asarray(features, np.float64)
    mean = features.mean(axis=0)
    cov = np.cov(features, rowvar=False)
    dims = cov.shape[0]
    cov = (1.0 - shrinkage) * cov + shrinkage * np.trace(cov) / dims * np.eye(dims)
    kernel = np.linalg.cholesky(np.linalg.inv(cov))  # precision = kernel @ kernel.T
    return kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)


def with_feature_distance(model: keras.Model, kernel: np.ndarray, bias: np.ndarray) -> keras.Model:
    """The model with a second output: whitened features (their mean square is the distance)."""
    pooled = model.get_layer(FEATURE_LAYER).output
    whitening = keras.layers.Dense(kernel.shape[1], name=WHITENING_LAYER)
    whitened = whitening(pooled)
    whitening.set_weights([kernel, bias])
    return keras.Model(model.input, [model.outputs[0], whitened], name=model.name)


def distances(whitened: np.ndarray) -> np.ndarray:
    return np.mean(np.square(whitened), axis=-1)
