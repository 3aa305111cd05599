"""Augmentation that suits radiographs, as stateless TF ops keyed by a per-example seed, so a
run is reproducible no matter how tf.data schedules the work.

Geometric: small rotations, shifts and zoom (patients are never perfectly centred), and a
stretch of one axis against the other (the films were squashed to a square from many aspect
ratios). No horizontal flips (see the README). Photometric, applied after equalisation: gamma, contrast,
brightness, blur and noise, which imitate other machines, exposures and resolutions.
"""

from __future__ import annotations

import math

import tensorflow as tf

# Half-width of the log aspect-ratio stretch at strength 1 (x0.78 to x1.28 of width over height).
ASPECT_RANGE = 0.25


def _uniform(seed, low, high):
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def _affine(image, seed, strength, aspect_range):
    size = tf.cast(tf.shape(image)[0], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    angle = _uniform(seeds[0], -10.0, 10.0) * strength * math.pi / 180.0
    zoom = tf.exp(_uniform(seeds[1], -0.12, 0.12) * strength)
    # Films of every aspect ratio were squashed to a square (and uploads are too), so the
    # width-to-height proportion of the thorax carries no diagnosis: stretch one axis freely.
    aspect = tf.exp(_uniform(seeds[4], -aspect_range, aspect_range) * strength)
    zoom_x, zoom_y = zoom * tf.sqrt(aspect), zoom / tf.sqrt(aspect)
    shift_x = _uniform(seeds[2], -0.07, 0.07) * strength * size
    shift_y = _uniform(seeds[3], -0.07, 0.07) * strength * size
    a0, a1 = tf.cos(angle) / zoom_x, -tf.sin(angle) / zoom_y
    b0, b1 = tf.sin(angle) / zoom_x, tf.cos(angle) / zoom_y
    centre = (size - 1.0) / 2.0
    # Maps each output pixel (x = column, y = row) to the input pixel it samples, about the centre.
    transform = tf.stack(
        [
            a0,
            a1,
            centre - (a0 + a1) * centre + shift_x,
            b0,
            b1,
            centre - (b0 + b1) * centre + shift_y,
            0.0,
            0.0,
        ]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return out[0]


def _blur(image, sigma):
    offsets = tf.range(-2.0, 3.0)
    kernel = tf.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = kernel / tf.reduce_sum(kernel)
    image = tf.nn.conv2d(image[None], tf.reshape(kernel, [5, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(image, tf.reshape(kernel, [1, 5, 1, 1]), 1, "SAME")[0]


def _photometric(image, seed, strength):
    seeds = tf.random.experimental.stateless_split(seed, 6)
    image = tf.pow(tf.clip_by_value(image, 1e-4, 1.0), tf.exp(_uniform(seeds[0], -0.35, 0.35) * strength))
    mean = tf.reduce_mean(image)
    image = (image - mean) * _uniform(seeds[1], 1.0 - 0.25 * strength, 1.0 + 0.25 * strength) + mean
    image = image + _uniform(seeds[2], -0.08, 0.08) * strength
    sigma = _uniform(seeds[3], 0.3, 0.3 + 1.0 * strength)
    image = tf.cond(_uniform(seeds[4], 0.0, 1.0) < 0.3, lambda: _blur(image, sigma), lambda: image)
    noise = tf.random.stateless_normal(tf.shape(image), seeds[5]) * _uniform(seeds[5], 0.0, 0.03 * strength)
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def augment(image, seed, strength: float = 1.0, aspect_range: float = ASPECT_RANGE):
    """One (S, S, 1) image in [0, 1] and a (2,) int seed -> an augmented image."""
    seed = tf.cast(seed, tf.int64)
    geometric, photometric = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return _photometric(_affine(image, geometric, strength, aspect_range), photometric, strength)


def seeds_dataset(seed: int) -> tf.data.Dataset:
    """An endless, reproducible stream of (2,) stateless seeds."""
    return tf.data.Dataset.random(seed=seed).batch(2)


def shifted_copy(images, seed: int, strength: float, batch: int = 64):
    """A fixed, reproducible, harder copy of a validation set: the shift signal that the
    near-perfect patient-split validation lacks."""
    ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(images), seeds_dataset(seed)))
    ds = ds.map(lambda x, s: augment(x, s, strength), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return tf.concat(list(ds.batch(batch)), axis=0).numpy()
