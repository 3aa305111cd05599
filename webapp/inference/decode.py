"""Stage 1: turn uploaded bytes into a grayscale float image, or refuse them clearly.

Every format ends as the same thing: a 2-D float32 array in [0, 1] where bright means
dense tissue (the MONOCHROME2 convention), so the later stages never care where a
file came from.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DecodeError(ValueError):
    """A file we refuse, with a stable machine code and a message a clinician can read."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32, shape (H, W), values in [0, 1]
    format: str  # "JPEG", "PNG", "DICOM", ...
    width: int  # of the original image, before any draft-mode reduction
    height: int
    colourfulness: float = 0.0  # mean per-pixel channel spread in [0, 1]; 0 for grayscale
    facts: dict[str, str] = field(default_factory=dict)  # non-identifying acquisition facts
    unknown_reason: str | None = None  # an input-level reason to answer UNKNOWN


def _colourfulness(rgb: Image.Image) -> float:
    small = np.asarray(rgb.resize((64, 64)), dtype=np.float32) / 255.0
    return float((small.max(axis=2) - small.min(axis=2)).mean())


def decode(data: bytes, *, target_size: int | None = None) -> DecodedImage:
    if not data:
        raise DecodeError("empty_file", "The file is empty.")
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format or "UNKNOWN"
        width, height = image.size
        if target_size and fmt == "JPEG":
            image.draft("RGB", (target_size, target_size))
        image = ImageOps.exif_transpose(image)
        rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DecodeError("unreadable_image", "The file is not an image we can read.") from exc
    pixels = np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0
    return DecodedImage(pixels, fmt, width, height, _colourfulness(rgb))
