"""The review copy of an upload: the film the viewer shows, up to REVIEW_IMAGE_SIZE.

Only decoded pixels are kept: no file header, EXIF or DICOM field survives this copy. It is not
de-identified: text a modality burned into the pixels (a name, an ID, a date) is part of the image.

The model reads the film reduced to about its input size. A film bigger than that needs a second,
larger decode and a PNG of up to a megapixel for its review copy: several times the cost of the
model on this hardware (benchmarks/review_copy.py). So the upload stores at once a copy of the
pixels the model read, answers, and makes the full-size copy on a worker thread afterwards. If the
process dies first, the interim copy stays: the film is always there, at worst at lower resolution.

That thread runs at the lowest CPU priority, so a copy only takes CPU that no upload is waiting
for: made at normal priority, the copies of back-to-back 3000 px films slowed each next answer by
about 20 ms (docs/serving.md). Two bounds keep that from costing anything else. At most BACKLOG
copies wait in a process (each holds its upload's bytes); past that an upload makes its own copy
at once, so a stream of big films slows down instead of filling memory. And the film's image route
does not wait behind the backlog: a copy not yet started is made there and then, one still being
made is waited for, briefly: at nice 19 it may be getting no CPU at all on a busy server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
from ..models import PredictionImages

log = logging.getLogger(__name__)

# How long a page's image request waits for a copy the copying thread has begun before making it
# itself. That thread runs at nice 19, so on a busy server it may get almost no CPU while the page
# waits on it (a priority inversion): pages waited 10 s, then showed the interim copy. A copy takes
# well under this at normal priority (docs/reading-view.md).
WAIT_S = 1.0
# Copies waiting per process before uploads make their own (the bytes of this many uploads are held).
BACKLOG = 8
# Linux's nice value for the copying thread: 19, the lowest priority.
NICE = 19


def _lowest_priority() -> None:
    # Linux gives each thread its own nice value; elsewhere this would renice the whole process.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


# One thread: the copies are CPU work that should not crowd out the model serving the next upload.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-copy", initializer=_lowest_priority)
_PENDING: dict[int, tuple[Future, tuple]] = {}  # prediction id -> (the copy's future, _upgrade's arguments)
_LOCK = threading.Lock()


def review_png(pixels: np.ndarray, size: int) -> bytes:
    """(H, W) grey floats in [0, 1] -> PNG of at most `size` pixels on the long side (never enlarged)."""
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return png_bytes(image)


def needs_larger_decode(image: DecodedImage, size: int) -> bool:
    """True when the decoder reduced the film below what the review copy can show."""
    wanted = min(max(image.width, image.height), size)
    return max(image.pixels.shape) < wanted


def make(data: bytes, image: DecodedImage, size: int, memory_mb: int | None = None) -> bytes:
    """The full-size review copy, made here and now; its decode within `memory_mb` (DECODE_MEMORY_MB)."""
    if not needs_larger_decode(image, size):
        return review_png(image.pixels, size)
    try:
        larger = decode(data, target_size=size, memory_mb=memory_mb)
    except DecodeError:
        # The model's decode of these bytes succeeded; without a larger one the film is still
        # kept, at the model's resolution.
        return review_png(image.pixels, size)
    return review_png(larger.pixels, size)


def at_upload(
    data: bytes, image: DecodedImage, size: int, background: bool, memory_mb: int | None = None
) -> tuple[bytes, bool]:
    """The copy stored with the answer, and whether the full-size one is still to be made
    (`upgrade_later`): with `background`, a big film first gets a copy of the pixels the model read."""
    later = background and needs_larger_decode(image, size) and backlog() < BACKLOG
    return (review_png(image.pixels, size) if later else make(data, image, size, memory_mb)), later


def upgrade_later(app: Flask, prediction_id: int, data: bytes, size: int) -> None:
    """Replace a committed prediction's interim copy with the full-size one, on the worker thread."""
    arguments = (app, prediction_id, data, size)
    # Listed under the lock it is submitted under: the copy forgets itself last, so it cannot finish first.
    with _LOCK:
        _PENDING[prediction_id] = (_POOL.submit(_upgrade_then_forget, *arguments), arguments)


def backlog() -> int:
    """Full-size copies waiting or being made in this process."""
    with _LOCK:
        return len(_PENDING)


def wait_for(prediction_id: int) -> bool:
    """The full-size copy of a film this process has still to make, made now if it has not started or
    is not done within WAIT_S, else waited for; True if there was one."""
    with _LOCK:
        future, arguments = _PENDING.get(prediction_id, (None, None))
    if future is None:
        return False
    # A failure is logged by _upgrade and leaves the interim copy, which is then served.
    with contextlib.suppress(Exception):
        if not future.cancel():  # begun on the copying thread
            try:
                future.result(timeout=WAIT_S)
                return True
            except TimeoutError:
                pass  # starved of CPU there: made here too; its own write, later, is the same image
        # Made here, at the priority of the page that asks.
        _forget(prediction_id)
        _upgrade(*arguments)
    return True


def _upgrade_then_forget(app: Flask, prediction_id: int, data: bytes, size: int) -> None:
    # Forgotten inside the copy's own call, not by a done-callback: the future's waiters wake as its
    # result is set, before its callbacks run, and the copying thread (at nice 19) may wait long for
    # the CPU in between; a page that had waited found the copy still listed, and backlog() counted it.
    try:
        _upgrade(app, prediction_id, data, size)
    finally:
        _forget(prediction_id)


def _forget(prediction_id: int) -> None:
    with _LOCK:
        _PENDING.pop(prediction_id, None)


def _upgrade(app: Flask, prediction_id: int, data: bytes, size: int) -> None:
    try:
        # The worker thread has no app context: the operator's decode budget comes from the app itself.
        larger = decode(data, target_size=size, memory_mb=app.config["DECODE_MEMORY_MB"])
        png = review_png(larger.pixels, size)
        with app.app_context():
            db.session.execute(
                update(PredictionImages).where(PredictionImages.prediction_id == prediction_id).values(review_png=png)
            )
            db.session.commit()
    except Exception:
        log.exception("review copy of prediction %s not enlarged; the interim copy stays", prediction_id)
        raise
