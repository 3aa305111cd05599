"""The de-identified review copy of an upload: the film the viewer shows, up to REVIEW_IMAGE_SIZE.

Only decoded pixels are kept: no file header, EXIF or DICOM field survives this copy.

The model reads the film reduced to about its input size. A film bigger than that needs a second,
larger decode and a PNG of up to a megapixel for its review copy: several times the cost of the
model on this hardware (benchmarks/review_copy.py). So the upload stores at once a copy of the
pixels the model read, answers, and makes the full-size copy on a worker thread straight after;
the film's image route waits for that copy when it is still being made in this process. If the
process dies first, the interim copy stays: the film is always there, at worst at lower resolution.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from flask import Flask
from PIL import Image
from sqlalchemy import update

from ..extensions import db
from ..inference.decode import DecodeError, decode
from ..inference.image import DecodedImage
from ..inference.overlay import png_bytes
from ..models import Prediction

log = logging.getLogger(__name__)

# One thread: the copies are CPU work that should not crowd out the model serving the next upload.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-copy")
_PENDING: dict[int, Future] = {}
_LOCK = threading.Lock()
# How long a page's image request waits for a copy still being made before it serves the interim one.
WAIT_S = 10.0


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
    """The full-size review copy, made here and now."""
    if not needs_larger_decode(image, size):
        return review_png(image.pixels, size)
    try:
        larger = decode(data, target_size=size)
    except DecodeError:
        # The model's decode of these bytes succeeded; without a larger one the film is still
        # kept, at the model's resolution.
        return review_png(image.pixels, size)
    return review_png(larger.pixels, size)


def at_upload(data: bytes, image: DecodedImage, size: int, background: bool) -> tuple[bytes, bool]:
    """The copy stored with the answer, and whether the full-size one is still to be made
    (`upgrade_later`): with `background`, a big film first gets a copy of the pixels the model read."""
    later = background and needs_larger_decode(image, size)
    return (review_png(image.pixels, size) if later else make(data, image, size)), later


def upgrade_later(app: Flask, prediction_id: int, data: bytes, size: int) -> None:
    """Replace a committed prediction's interim copy with the full-size one, on the worker thread."""
    future = _POOL.submit(_upgrade, app, prediction_id, data, size)
    with _LOCK:
        _PENDING[prediction_id] = future
    future.add_done_callback(lambda _: _forget(prediction_id))


def wait_for(prediction_id: int) -> bool:
    """Wait (up to WAIT_S) for a full-size copy still being made in this process; True if there was one."""
    with _LOCK:
        future = _PENDING.get(prediction_id)
    if future is None:
        return False
    # A failure is logged by _upgrade, and a timeout leaves the interim copy: either way it is served.
    with contextlib.suppress(Exception):
        future.result(timeout=WAIT_S)
    return True


def _forget(prediction_id: int) -> None:
    with _LOCK:
        _PENDING.pop(prediction_id, None)


def _upgrade(app: Flask, prediction_id: int, data: bytes, size: int) -> None:
    try:
        png = review_png(decode(data, target_size=size).pixels, size)
        with app.app_context():
            db.session.execute(update(Prediction).where(Prediction.id == prediction_id).values(review_png=png))
            db.session.commit()
    except Exception:
        log.exception("review copy of prediction %s not enlarged; the interim copy stays", prediction_id)
        raise
