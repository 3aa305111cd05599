"""Stage 4: Grad-CAM heat maps, and a PNG of the radiograph with the heat map blended in.

The forward pass and the gradient of the pneumonia logit with respect to the last
convolutional feature map are one compiled function, so the heat map costs one backward pass
on top of the prediction rather than a second model call.
"""
from __future__ import annotations

import io

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from .preprocess import resize

# Anchors of a perceptually ordered blue -> yellow -> red map (value, R, G, B).
_ANCHORS = np.array(
    [
        [0.00, 0.05, 0.05, 0.35],
        [0.25, 0.10, 0.45, 0.85],
        [0.50, 0.20, 0.80, 0.55],
        [0.75, 0.98, 0.85, 0.15],
        [1.00, 0.85, 0.10, 0.05],
    ],
    dtype=np.float32,
)


def build_explained_forward(model: keras.Model, layer_name: str):
    """A compiled fn: batch (N, S, S, 1) -> (logits (N, K), feature_distance (N,),
    cam_for (N, S, S), cam_against (N, S, S)).

    `cam_for` highlights regions that push the pneumonia logit up, `cam_against` those that
    push it down (the evidence for NORMAL). Both are scaled to [0, 1] per image. The feature
    distance is the mean square of the model's optional second output (whitened features);
    models without one report 0.
    """
    features = model.get_layer(layer_name).output
    probe = keras.Model(model.input, [features, *model.outputs])

    @tf.function(reduce_retracing=True)
    def forward(batch):
        with tf.GradientTape() as tape:
            maps, logits, *whitened = probe(batch, training=False)
            target = tf.reduce_sum(logits[:, 0])
        grads = tape.gradient(target, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        size = tf.shape(batch)[1:3]
        distance = tf.reduce_mean(tf.square(whitened[0]), axis=-1) if whitened else tf.zeros(tf.shape(batch)[:1])
        return logits, distance, _cam(maps, weights, size), _cam(maps, -weights, size)

    return forward


def _cam(maps, weights, size):
    cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


_LUT = np.stack([np.interp(np.linspace(0, 1, 256), _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)], axis=-1)


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float32 RGB in [0, 1]."""
    index = np.rint(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
    return _LUT.astype(np.float32)[index]


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, size: int, alpha: float = 0.45) -> bytes:
    """The radiograph (grey) with the heat map blended where it is strong, as a size x size PNG."""
    grey = np.clip(resize(pixels, size), 0.0, 1.0)
    heat = np.clip(resize(heatmap, size), 0.0, 1.0)
    # Weak activations stay transparent so the film itself remains readable.
    weight = (alpha * np.clip(heat * 1.5 - 0.2, 0.0, 1.0))[..., None]
    rgb = (1.0 - weight) * grey[..., None] + weight * colourise(heat)
    image = Image.fromarray(np.rint(rgb * 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    # Fastest zlib level: the PNG is made per request; level 1 is ~30% faster than 3 here
    # (8 vs 12 ms on a 224 px overlay) for ~4% more bytes (benchmarks/results/RESULTS.md).
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
