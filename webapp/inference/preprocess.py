"""Stage 2: preprocess. The one preprocessing shared by training and serving.

`decode()` gives a grayscale float image of any size; this turns it into the model input:
a plain resize to a square (the training films were made square the same way, aspect ratio
not kept) and global histogram equalisation, which removes most of the exposure and
contrast differences between X-ray machines that otherwise steer the model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

LEVELS = 256


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Plain (aspect-ratio-ignoring) bilinear resize of a float image to size x size."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def equalise(pixels: np.ndarray) -> np.ndarray:
    """Global histogram equalisation on 256 grey levels; a flat image maps to mid-grey."""
    levels = np.clip(np.rint(pixels * (LEVELS - 1)), 0, LEVELS - 1).astype(np.int64)
    cdf = np.bincount(levels.ravel(), minlength=LEVELS).cumsum()
    lowest = cdf[levels.min()]
    if cdf[-1] == lowest:
        return np.full(pixels.shape, 0.5, dtype=np.float32)
    lut = ((cdf - lowest) / (cdf[-1] - lowest)).clip(0.0, 1.0).astype(np.float32)
    return lut[levels]


def preprocess(pixels: np.ndarray, size: int) -> np.ndarray:
    """DecodedImage.pixels (H, W) float in [0, 1] -> model input (size, size, 1) float32 in [0, 1]."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    return equalise(resize(pixels, size))[..., None]
