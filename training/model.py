"""The network: a compact from-scratch CNN with two heads on shared features.

Head "pneumonia" scores the film; head "chest_xray" scores whether the input is a frontal
chest radiograph at all (the learned half of the UNKNOWN mechanism). Both are raw logits,
packed as one (batch, 2) output so the shipped file needs no custom objects.
"""

from __future__ import annotations

import keras
from keras import layers

GRADCAM_LAYER = "last_conv"
OUTPUT_COLUMNS = ("pneumonia", "chest_xray")


def _conv(x, filters: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def build_model(input_size: int, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3) -> keras.Model:
    inputs = keras.Input((input_size, input_size, 1), name="image")
    # Inputs arrive equalised in [0, 1]; centring them here keeps the shipped file self-contained.
    x = layers.Rescaling(4.0, offset=-2.0, name="centre")(inputs)
    x = _conv(x, widths[0] // 2, "stem", strides=2)
    for i, width in enumerate(widths):
        x = _conv(x, width, f"block{i}_a")
        name = GRADCAM_LAYER if i == len(widths) - 1 else f"block{i}_b"
        x = _conv(x, width, name)
        if i < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(len(OUTPUT_COLUMNS), name="logits")(x)
    return keras.Model(inputs, logits, name="cxr_pneumonia")
