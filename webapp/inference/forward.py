"""Stage 3: forward. The model's logits and its Grad-CAM heat maps, in one compiled call.

The forward pass and the gradient of the pneumonia logit with respect to the last
convolutional feature map are one compiled function, so the heat map needs no second model
call. That gradient only flows back through global pooling and the Dense head, so it costs
next to nothing (measured: the same per-film time as a forward pass alone).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def build_forward(model: keras.Model, layer_name: str):
    """A compiled fn: batch (N, S, S, 1) -> (logits (N, K), feature_distance (N,),
    adult_logit (N,), cam_for (N, S, S), cam_against (N, S, S)).

    `cam_for` highlights regions that push the pneumonia logit up, `cam_against` those that
    push it down (the evidence for NORMAL). Both are scaled to [0, 1] per image. The feature
    distance is the mean square of the model's optional second output (whitened features);
    models without one report 0. The optional third output is the intended-use gate's logit
    ("looks like an adult's film"), 0 for models without a gate.
    """
    features = model.get_layer(layer_name).output
    probe = keras.Model(model.input, [features, *model.outputs])

    @tf.function(reduce_retracing=True)
    def forward(batch):
        with tf.GradientTape() as tape:
            maps, logits, *extra = probe(batch, training=False)
            target = tf.reduce_sum(logits[:, 0])
        grads = tape.gradient(target, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        size = tf.shape(batch)[1:3]
        none = tf.zeros(tf.shape(batch)[:1])
        distance = tf.reduce_mean(tf.square(extra[0]), axis=-1) if extra else none
        adult = extra[1][:, 0] if len(extra) > 1 else none
        return logits, distance, adult, _cam(maps, weights, size), _cam(maps, -weights, size)

    return forward


def _cam(maps, weights, size):
    cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)
