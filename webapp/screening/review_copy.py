"""The de-identified review copy of an upload: the film the viewer shows, up to REVIEW_IMAGE_SIZE.

Only decoded pixels are kept: no file header, EXIF or DICOM field survives this copy. The model
reads a copy reduced to its own input size; for a film bigger than that the review copy needs a
second, larger decode, which `start` runs on a worker thread while the model reads the film
(Pillow's decoders and zlib release the GIL, like TensorFlow), so the upload does not wait for it
in series (benchmarks/review_copy.py measures both orders).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..inference.decode import DecodeError, decode
from ..inference.image import DecodedImage
from ..inference.overlay import png_bytes

# Two threads: a gunicorn worker serves a few requests at once, and each needs at most one.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="review-copy")


def review_png(pixels: np.ndarray, size: int) -> bytes:
    """(H, W) grey floats in [0, 1] -> PNG of at most `size` pixels on the long side (never enlarged)."""
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return png_bytes(image)


def needs_larger_decode(image: DecodedImage, size: int) -> bool:
    """True when the decoder reduced the film below what the review copy can show."""
    wanted = min(max(image.width, image.height), size)
    return max(image.pixels.shape) < wanted


def make(data: bytes, image: DecodedImage, size: int) -> bytes:
    if not needs_larger_decode(image, size):
        return review_png(image.pixels, size)
    try:
        larger = decode(data, target_size=size)
    except DecodeError:
        # The model's decode of these bytes succeeded; if a larger one cannot be made the
        # film is still kept, at the model's resolution.
        return review_png(image.pixels, size)
    return review_png(larger.pixels, size)


def start(data: bytes, image: DecodedImage, size: int) -> Future[bytes]:
    """Begin `make` on a worker thread; call .result() on the answer to get the PNG."""
    return _POOL.submit(make, data, image, size)
