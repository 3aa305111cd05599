"""Stored samples to grey levels in [0, 1], in the standard's order: Modality LUT (or rescale
slope/intercept), then VOI LUT (or window), scaled by the output range the VOI step defines; padding
left out of that range; colour films to their luma.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, convert_color_space

from .image import (
    DecodeError,
    as_scaled_to_unit,
    scale_to_unit,
    scale_with,
    scaling_extremes,
)

_MAX_TABLE = 1 << 20


LUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError, struct.error)


def grey_levels(stored: np.ndarray, ds) -> np.ndarray:
    """Stored values -> Modality LUT -> VOI -> [0, 1]. Every step is pointwise, so for
    integer data the chain runs once per distinct value (at most 65536) and the image
    is one table lookup: exact, and ~20x faster than float64 arithmetic on a film."""
    low, high = (int(stored.min()), int(stored.max())) if stored.dtype.kind in "ui" else (0, -1)
    _as_pydicom_reads_it(ds, floats=stored.dtype.kind == "f")
    if not 0 <= high - low < _MAX_TABLE:
        return _grey_in_bands(stored, ds)  # float data, or 32-bit values spread too wide
    padding = _padding(stored, ds)
    # Padding (e.g. 0xFFFF around the detector's field) is not image: left in, it would set the range
    # and squeeze the anatomy into a few grey levels (PS3.3 C.7.5.1.1.2).
    image = stored if padding is None else stored[~padding]
    table = _grey_chain(np.arange(low, high + 1, dtype=np.int64), ds, image)
    grey = table[np.subtract(stored, low, dtype=np.int32) if low else stored]
    if padding is not None:
        grey[padding] = np.clip(grey[padding], 0.0, 1.0)  # beyond the image's range: shown at its nearer end
    return grey


def _as_pydicom_reads_it(ds, floats: bool) -> None:
    """The header as pydicom's grey-level functions need it to give the standard's result."""
    if floats:
        # Float pixel data has no Bits Stored or Pixel Representation, and any the file carries (copied
        # from an integer film) mean nothing; pydicom's windowing reads both, for its output range only,
        # which is scaled to [0, 1] here anyway: without them a windowed float film was called damaged.
        ds.BitsStored, ds.PixelRepresentation = 16, 0
    lut = (ds.get("VOILUTSequence") or [None])[0]
    descriptor = list(lut.get("LUTDescriptor") or []) if lut is not None else []
    if len(descriptor) == 3 and descriptor[2] == 8:
        # pydicom's apply_voi indexes the table through an array of the entries' type: uint8 for 8-bit
        # entries, so with more than 256 entries (a 12-bit film's 4096) every index wrapped modulo 256 and
        # the film came out in stripes. Read as 16-bit entries, the same values index without wrapping.
        lut.LUTDescriptor = [*descriptor[:2], 16]


_FLOAT_PADDING = {
    4: ("FloatPixelPaddingValue", "FloatPixelPaddingRangeLimit"),
    8: ("DoubleFloatPixelPaddingValue", "DoubleFloatPixelPaddingRangeLimit"),
}


def _padding(stored: np.ndarray, ds) -> np.ndarray | None:
    """Which pixels are padding: equal to Pixel Padding Value or, with Pixel Padding Range Limit,
    between the two inclusive. None when there is none, or when nothing but padding would remain."""
    try:
        if stored.dtype.kind == "f":  # Float or Double Float Pixel Padding Value: the floats themselves
            value, limit = (_first_number(ds.get(keyword)) for keyword in _FLOAT_PADDING[stored.dtype.itemsize])
        else:
            value, limit = (
                _stored_value(ds.get(keyword), ds) for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit")
            )
    except Exception:  # noqa: BLE001  a value pydicom cannot convert is no padding
        return None
    if value is None:
        return None
    low, high = (value, value) if limit is None else sorted((value, limit))
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() and not mask.all() else None


def _stored_value(value, ds) -> int | None:
    """A padding value as pydicom gives the pixels: cut to Bits Stored, and signed when they are."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    if value is None or value == "" or value == b"":
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if isinstance(value, bytes):  # Implicit VR "US or SS" left undecided
        value = int.from_bytes(value[:2], "little", signed=signed)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    value = int(value) & ((1 << bits) - 1)
    return value - (1 << bits) if signed and value >= 1 << (bits - 1) else value


def _grey_chain(values: np.ndarray, ds, stored: np.ndarray | None = None) -> np.ndarray:
    """The chain itself, scaled by the output range the VOI step defines (so a window
    means what it says) or, with no VOI in the file, by the declared range of the
    stored values. `stored` is the whole frame when `values` is only its value set."""
    bounds = _output_range(values if stored is None else stored, ds)
    values = _voi(apply_modality_lut(values, ds), ds)
    return scale_to_unit(values) if bounds is None else _scaled(values, bounds)


def _voi(values: np.ndarray, ds) -> np.ndarray:
    if ds.get("VOILUTSequence"):
        return apply_voi(values, ds)
    return apply_windowing(values, ds) if _usable_window(ds) else values


def _output_range(stored: np.ndarray, ds) -> tuple[float, float] | None:
    """(low, high): the chain's outputs shown black and white, the window's output range or the stored
    extremes through the chain. None when that range is empty or not finite (the image's own extremes
    are used then)."""
    rescaled = apply_modality_lut(_stored_extremes(stored, ds), ds)
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.ptp(np.asarray(rescaled, dtype=np.float64))
    if not np.isfinite(span):
        # A slope of 1e305 on 12-bit data, or float data from -1e308 to 1e308: no float64 holds the span,
        # and the film came out blank (UNKNOWN, "every pixel has the same value") or NaN (refused as such).
        raise DecodeError(
            "corrupt_dicom",
            "The DICOM file's pixel values, after its Rescale Slope and Rescale Intercept, span more than "
            "the range of numbers a computer holds; the file is damaged.",
        )
    if _usable_window(ds) and not ds.get("VOILUTSequence"):
        # The window's output at its dark and its bright end, in that order: pydicom takes its output range
        # from the rescaled stored range, which a negative Rescale Slope turns upside down, so its window
        # then darkens what it should brighten (dcmtk and viewers keep it the right way up: a slope of -1
        # with a window gave the film as a negative). Scaled from dark end to bright end, it is upright.
        low, high = (float(end) for end in apply_windowing(np.array([-np.inf, np.inf]), ds))
    else:
        bounds = _voi(rescaled, ds)
        low, high = float(np.min(bounds)), float(np.max(bounds))
    return (low, high) if np.isfinite([low, high]).all() and high != low else None


def _scaled(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return ((np.asarray(values, dtype=np.float64) - low) / (high - low)).astype(np.float32)


# Rows of this many pixels at a time: the chain's float64 steps take about 20 bytes a pixel.
_BAND_PIXELS = 1 << 18


def _grey_in_bands(stored: np.ndarray, ds) -> np.ndarray:
    """_grey_chain(stored, ds), band by band of rows into one float32 image. Every step is pointwise,
    so the pixels are the whole-image chain's; its float64 copies are a band's, not the film's (a
    rescaled 3000 x 3000 float32 film peaked at 206 MB through the whole-image chain, counted 170)."""
    rows = max(1, _BAND_PIXELS // stored.shape[1])
    bands = [slice(start, start + rows) for start in range(0, stored.shape[0], rows)]
    # Padding sets no part of the range (see grey_levels); beyond it, it ends clipped at the nearer end.
    padding = _padding(stored, ds)
    bounds = _output_range(stored if padding is None else stored[~padding], ds)
    del padding
    grey = np.empty(stored.shape, dtype=np.float32)

    def mapped(band: slice) -> np.ndarray:
        return _voi(apply_modality_lut(stored[band], ds), ds)

    if bounds is not None:
        for band in bands:
            grey[band] = _scaled(mapped(band), bounds)
        return grey
    # Range empty or not finite: scale_to_unit's map, with the extremes of the whole mapped image.
    lows, highs = zip(*(scaling_extremes(as_scaled_to_unit(mapped(band))) for band in bands), strict=True)
    for band in bands:
        grey[band] = scale_with(as_scaled_to_unit(mapped(band)), min(lows), max(highs))
    return grey


_VOI_FUNCTIONS = {"LINEAR": 1.0, "LINEAR_EXACT": 0.0, "SIGMOID": 0.0}  # width must be >= 1, > 0, > 0


def _usable_window(ds) -> bool:
    """Whether the file's first window can be applied (PS3.3 C.11.2.1.2). An empty, zero, negative or
    non-numeric centre or width is common in exports; viewers then ignore the window and show the
    stored range, and so do we rather than call the film damaged."""
    try:
        centre, width = (_first_number(ds.get(keyword)) for keyword in ("WindowCenter", "WindowWidth"))
        # As pydicom's apply_windowing reads it: an empty function is not LINEAR to it.
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    except Exception:  # noqa: BLE001  a value pydicom cannot convert is no window
        return False
    if centre is None or width is None or function not in _VOI_FUNCTIONS:
        return False
    least = _VOI_FUNCTIONS[function]
    return width >= least if least else width > 0


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None  # the first window is the one shown by default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


_LUMA = (0.299, 0.587, 0.114)


_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")


def grey_from_colour(frame: np.ndarray, colour_space: str = "RGB") -> tuple[np.ndarray, float]:
    """(H, W, 3) samples -> grey in [0, 1] and the colourfulness of a ~64 px subsample.

    YBR_FULL: the grey is Y, which is the ITU-R 601 luma of the RGB it encodes; only the subsample
    is converted to RGB to measure colour. RGB: the same values as scale_to_unit(frame) @ luma
    weights; both are affine, so the weighted sum is taken on the samples as stored, one channel
    at a time, and scaled once. The whole frame in float32 (12 bytes a pixel) is never made."""
    step = max(1, min(frame.shape[:2]) // 64)
    if colour_space in _YBR_FULL and frame.dtype == np.uint8:
        sample = convert_color_space(np.ascontiguousarray(frame[::step, ::step]), "YBR_FULL", "RGB")
        grey = frame[..., 0].astype(np.float32) * np.float32(1 / 255)
        return grey, _channel_spread(sample.astype(np.float32) / np.float32(255))
    grey = frame[..., 0].astype(np.float32) * np.float32(_LUMA[0])
    for channel in (1, 2):
        grey += frame[..., channel].astype(np.float32) * np.float32(_LUMA[channel])
    # The affine map scale_to_unit would apply to the whole frame, found from its extremes.
    extremes = np.array([frame.min(), frame.max()], dtype=frame.dtype)
    unit = scale_to_unit(extremes)
    low, high = float(extremes[0]), float(extremes[1])
    scale = (float(unit[1]) - float(unit[0])) / (high - low) if high > low else 0.0
    offset = np.float32(float(unit[0]) - low * scale)
    grey *= np.float32(scale)
    grey += offset
    sample = frame[::step, ::step].astype(np.float32) * np.float32(scale) + offset
    return grey, _channel_spread(sample)


def _channel_spread(rgb: np.ndarray) -> float:
    """Colourfulness: the mean spread between a pixel's brightest and darkest channel."""
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())


def _stored_extremes(stored: np.ndarray, ds) -> np.ndarray:
    """Lowest and highest value the stored pixels can take. For unsigned data the
    depth is the smallest one (8 bits up to Bits Stored) that holds the brightest
    pixel, the same rule as for 16-bit PNG: "Bits Stored 16" on 12-bit data is common."""
    if stored.dtype.kind == "f":
        return np.array([np.nanmin(stored), np.nanmax(stored)])
    declared = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return np.array([-(2 ** (declared - 1)), 2 ** (declared - 1) - 1], dtype=np.int64)
    bits = min(declared, max(8, int(stored.max()).bit_length()))
    return np.array([0, 2**bits - 1], dtype=np.int64)


def check_rescale(ds) -> None:
    """Rescale Slope and Intercept multiply every pixel: "NaN", "inf" or a word there would make the
    whole image NaN (or a crash in pydicom), so the file is refused with a message naming them."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        try:
            value = ds.get(keyword)
            number = None if value is None or value == "" else float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if number is not None and not np.isfinite(number):
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file's Rescale Slope or Rescale Intercept is not a valid number; the file is damaged.",
            )
