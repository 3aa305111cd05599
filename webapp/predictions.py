"""Screen one uploaded file and log it: the one path shared by the web pages and the JSON API.

Everything that can fail (decoding, the model) runs before anything is written, so a refused
file leaves no row and no stored image behind.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
from flask import current_app
from PIL import Image

from .extensions import db
from .filenames import sanitize_filename
from .inference.decode import DecodeError, decode
from .inference.overlay import heatmap_png, png_bytes
from .inference.runtime import ModelUnavailable, get_analyzer
from .models import Prediction, User

# Refusal codes that mean "not a kind of file we take" rather than "a broken file".
UNSUPPORTED_CODES = frozenset({"unsupported_type", "not_an_image"})


@dataclass
class UploadRejected(Exception):
    code: str
    message: str
    status: int = 422


def analyzer():
    try:
        return get_analyzer(current_app.config["MODEL_PATH"])
    except ModelUnavailable as exc:
        raise UploadRejected("model_unavailable",
                             "The screening model is not available on this server right now. "
                             "Please try again later or contact IT.", 503) from exc


def _review_png(pixels: np.ndarray, size: int) -> bytes:
    # Only decoded pixels are kept: no file header, EXIF or DICOM field survives this copy.
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return png_bytes(image)


def screen_upload(user: User, raw_filename: str | None, data: bytes) -> Prediction:
    started = time.perf_counter()
    filename = sanitize_filename(raw_filename)
    model = analyzer()
    try:
        image = decode(data, target_size=model.input_size)
    except DecodeError as exc:
        status = 415 if exc.code in UNSUPPORTED_CODES else 422
        raise UploadRejected(exc.code, exc.message, status) from exc
    analysis = model.analyze(image)
    size = current_app.config["REVIEW_IMAGE_SIZE"]
    prediction = Prediction(
        user_id=user.id,
        filename=filename,
        sha256=hashlib.sha256(data).hexdigest(),
        image_format=image.format,
        file_size=len(data),
        width=image.width,
        height=image.height,
        label=analysis.label,
        p_normal=float(analysis.probabilities["NORMAL"]),
        p_pneumonia=float(analysis.probabilities["PNEUMONIA"]),
        threshold=float(analysis.threshold),
        model_version=analysis.model_version,
        unknown_reason=analysis.unknown_reason,
        caution=analysis.caution,
        facts=dict(image.facts),
        review_png=_review_png(image.pixels, size),
        # The map alone; the coloured overlay is drawn only when a page shows it.
        heatmap_png=heatmap_png(analysis.heatmap),
        latency_ms=0.0,
    )
    prediction.latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
    db.session.add(prediction)
    db.session.commit()
    return prediction
