"""Stage 4: Grad-CAM heat maps, computed in the same compiled call as the prediction.

Grad-CAM weighs each channel of the last convolutional feature map by the mean gradient of the
pneumonia logit. When that map reaches the logit only through global average pooling and a
Dense layer (every network this project trains, ensembles included), the gradient is the same
for every input, so Grad-CAM equals CAM: the weights are measured once when the model is
loaded and each request costs one forward pass and no backward pass. A model where the
gradient does depend on the input keeps the per-request backward pass.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


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

    def outputs(batch):
        maps, logits, *whitened = probe(batch, training=False)
        distance = tf.reduce_mean(tf.square(whitened[0]), axis=-1) if whitened else tf.zeros(tf.shape(batch)[:1])
        return maps, logits, distance

    @tf.function(reduce_retracing=True)
    def channel_weights(batch):
        with tf.GradientTape() as tape:
            maps, logits, _ = outputs(batch)
            target = tf.reduce_sum(logits[:, 0])
        return tf.reduce_mean(tape.gradient(target, maps), axis=(1, 2), keepdims=True)

    constant = _constant_weights(channel_weights, tuple(probe.inputs[0].shape[1:]))

    @tf.function(reduce_retracing=True)
    def forward(batch):
        size = tf.shape(batch)[1:3]
        if constant is None:
            weights = channel_weights(batch)
            maps, logits, distance = outputs(batch)
        else:
            maps, logits, distance = outputs(batch)
            weights = constant
        return logits, distance, _cam(maps, weights, size), _cam(maps, -weights, size)

    return forward


def _constant_weights(channel_weights, input_shape):
    """The Grad-CAM channel weights if they are the same for very different inputs, else None."""
    rng = np.random.default_rng(0)
    probes = [np.zeros((1, *input_shape), np.float32), rng.random((1, *input_shape), dtype=np.float32)]
    first, second = (channel_weights(p).numpy() for p in probes)
    scale = max(float(np.abs(first).max()), 1e-12)
    return tf.constant(first) if np.allclose(first, second, rtol=0.0, atol=1e-5 * scale) else None


def _cam(maps, weights, size):
    cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)
