"""What every decoder produces, and the limits and helpers the raster and DICOM decoders share.

Kept apart from `decode` so that `dicom` can use them without importing its own caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Largest accepted image: 36 megapixels (6000x6000). The biggest flat-panel chest
# detectors are about 4300x4300 (18.5 MP), so this leaves room while keeping the
# worst-case decode of one upload to a few hundred MB of memory.
MAX_PIXELS = 36_000_000
# No real radiograph is longer than this on one side; a 60000x100 "image" is an attack.
MAX_SIDE = 16_384
# Memory one decode may take at its peak by default, each decoder's measured cost for the image
# from its header (docs/security.md): room for the costliest ordinary film, a 4300 x 4300 detector
# image as a 16-bit DICOM (226 MB), with an eighth to spare (16-bit DICOM films up to 21 megapixels).
DEFAULT_DECODE_MEMORY_MB = 512
MB = 1024 * 1024
# Smaller than this on the short side there is nothing left to read.
MIN_SIDE = 32
# Short sides below this are decoded but answered UNKNOWN: too coarse to assess.
LOW_RES_SIDE = 128


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
    width: int  # of the original image (as displayed), before any size reduction
    height: int
    colourfulness: float = 0.0  # mean per-pixel channel spread in [0, 1]; 0 for grayscale
    facts: dict[str, str] = field(default_factory=dict)  # non-identifying acquisition facts
    unknown_reason: str | None = None  # an input-level reason to answer UNKNOWN
    # The patient's age in years from a DICOM header, for the intended-use decision only: it is
    # never stored, logged or shown (None when the file carries no valid age).
    age_years: float | None = None


def scale_to_unit(values: np.ndarray) -> np.ndarray:
    """High-bit-depth gray to [0, 1] by the range the data actually use.

    Unsigned integers are divided by the smallest bit depth (8 to 16 bits) that holds
    the brightest pixel: a 16-bit PNG of an 8-bit film (values x257) maps onto the 8-bit
    reading (to a float ulp, which on_8bit_levels then removes), and
    a 12-bit detector export stored in 16-bit words (0..4095) is not rendered 16 times too
    dark. Contrast is never stretched per image, so the same film gives the same pixels
    (to that ulp) whatever container it came in. Signed or float
    data have no such convention and are scaled by their own min/max.
    """
    values = as_scaled_to_unit(values)
    return scale_with(values, *scaling_extremes(values))


def as_scaled_to_unit(values: np.ndarray) -> np.ndarray:
    """The values scale_to_unit scales: integers as they are, floats in float32 with NaN and infinity
    as 0 (pointwise: band by band, with the extremes of all bands, scale_with gives the same pixels)."""
    if values.dtype.kind in "ui":
        return values
    return np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def scaling_extremes(values: np.ndarray) -> tuple[int, int] | tuple[float, float]:
    """(lowest, highest) as scale_with takes them: ints for integers, floats for float data."""
    number = int if values.dtype.kind in "ui" else float
    return number(values.min()), number(values.max())


def scale_with(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """scale_to_unit's map, given the extremes of the whole image: `values` may be one band of it
    (pointwise, so band by band gives the same pixels). Integers take int extremes; floats are finite."""
    if values.dtype.kind in "ui":
        if low >= 0:
            bits = max(8, high.bit_length())
            return values.astype(np.float32) * np.float32(1 / (2**bits - 1))
        return ((values.astype(np.float32) - low) / max(high - low, 1)).astype(np.float32)
    values = values.astype(np.float32, copy=False)
    if low >= 0 and high <= 1:
        return values
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    if high - low > float(np.finfo(np.float32).max):
        # values - low would overflow float32 to infinity (a range such as -3e38..3e38)
        return ((values.astype(np.float64) - low) / (high - low)).astype(np.float32)
    return (values - low) / np.float32(high - low)


def on_8bit_levels(pixels: np.ndarray) -> np.ndarray:
    """An 8-bit film in any container, on exactly the grey values the 8-bit raster decoder writes
    (float32(k) * float32(1/255)); finer data (a 12- or 16-bit film, a windowed one) as they are.
    Works in place on the decoder's own array: no full-size copy at the decode's memory peak.

    Every training film was an 8-bit JPEG. The same pixels in a DICOM or a 16-bit PNG decode to k/255
    computed another way, a float ulp off, and the model's resize puts many pixels exactly half-way
    between two levels, where that ulp decides which level equalisation picks: hundreds of the
    model's input pixels differed by a level, and the score with them."""
    for start in range(0, pixels.shape[0], _ROWS_AT_A_TIME):
        block = pixels[start : start + _ROWS_AT_A_TIME] * np.float32(255)
        if float(np.abs(block - np.rint(block)).max()) > _LEVEL_TOLERANCE:
            return pixels
    snapped = pixels if pixels.flags.writeable else pixels.copy()
    snapped *= np.float32(255)
    np.rint(snapped, out=snapped)
    snapped *= np.float32(1 / 255)
    return snapped


# How far (in 8-bit levels) a pixel may lie from a level and still count as 8-bit data: float error
# in k/255 is about 1e-5 of a level; a 12-bit film's values lie up to half a level off.
_LEVEL_TOLERANCE = 1e-3
_ROWS_AT_A_TIME = 256


def shrink(pixels: np.ndarray, target_size: int | None) -> np.ndarray:
    """Box-average by an integer factor that keeps both sides >= target_size
    (the array counterpart of JPEG draft mode)."""
    if not target_size:
        return pixels
    return shrink_by(pixels, min(pixels.shape) // target_size)


def shrink_by(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Box-average factor x factor blocks; the rows and columns after the last whole block are left out."""
    if factor < 2:
        return pixels
    h, w = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    blocks = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def refuse_non_finite(values: np.ndarray) -> None:
    """NaN or infinity has no grey level: zeroing it would invent tissue, and later stages
    (histograms, comparisons) misbehave on it. Also the last guard for every decoder's output."""
    if not np.isfinite(values).all():
        raise DecodeError(
            "invalid_pixels",
            "The image holds pixel values that are not numbers (NaN or infinity), so it cannot be read as a "
            "radiograph. Export the film as 8- or 16-bit integer data (PNG, TIFF or DICOM).",
        )


def check_dimensions(width: int, height: int) -> None:
    """Refuse from the header alone, before a single pixel is decoded."""
    if width <= 0 or height <= 0:
        raise DecodeError("corrupt_image", "The image header declares no pixels.")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise too_large(width, height)
    if min(width, height) < MIN_SIDE:
        raise DecodeError(
            "too_small",
            f"The image is {width}x{height} pixels; at least {MIN_SIDE} pixels on each side are needed.",
        )


def check_memory(width: int, height: int, peak_bytes: int, budget_mb: int | None) -> None:
    """Refuse, from the header alone, an image whose decode would hold more than the budget at its
    peak (`peak_bytes`: each decoder's measured cost for this image, see docs/security.md). The need is
    given rounded up: rounded to nearest, a need just over the budget read as the budget itself."""
    budget = (budget_mb or DEFAULT_DECODE_MEMORY_MB) * MB
    if peak_bytes > budget:
        raise DecodeError(
            "too_large_to_decode",
            f"Decoding this image ({width}x{height} pixels) would need {-(-peak_bytes // MB)} MB of memory; "
            f"this server decodes at most {budget // MB} MB per image. "
            "Export the film as 8-bit grayscale or at a smaller size.",
        )


def too_large(width: int | None = None, height: int | None = None) -> DecodeError:
    size = f" ({width}x{height} pixels)" if width and height else ""
    return DecodeError(
        "too_large_dimensions",
        f"The image dimensions{size} are larger than any radiograph "
        f"(limit {MAX_PIXELS // 1_000_000} megapixels, {MAX_SIDE} pixels a side).",
    )
