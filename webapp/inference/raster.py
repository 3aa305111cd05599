"""A decoded Pillow image to grey float pixels one band of rows at a time, and what that costs at the peak.

Pillow keeps every multi-band image at 4 bytes a pixel, and turning a whole one grey made full-size
copies: flattening alpha over white an RGBA copy, a white background, the composite and an RGB copy;
a palette or CMYK image an RGB copy; 16-bit or float data a bytes copy and float32 ones. A 6000 x 6000
grey+alpha PNG counted at 69 MB peaked at 687 MB. Here each band goes through the same steps and is
reduced to the size the caller asked for before the next band is read, so the peak is the stored image,
one band's copies and the result. Bands are whole multiples of the reduction factor, so every box that
Pillow's `reduce` and `shrink` average holds the same pixels as on the whole image: the result is
identical to the whole-image steps (tests/test_decode_memory.py compares them on every mode).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image import on_8bit_levels, refuse_non_finite, scale_with, scaling_extremes, shrink_by

HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Pixels in one band: its working copies (at most ~24 bytes a pixel, when alpha is flattened) stay
# near 100 MB. A film up to 2048 x 2048 (a 224 px JPEG, the usual upload; a detector's 16-bit PNG) is
# one band and takes the whole-image steps: with half-megapixel bands, a 2048 x 2048 16-bit PNG's
# review copy, converted on a thread after its answer, cost the next upload 15 ms (p50 91 -> 106 ms).
_BAND_PIXELS = 1 << 22
# Bytes a pixel of one band's working copies, per path, from what each step allocates (checked
# against the measured peaks, tests/test_decode_memory.py): the crop, then each conversion's output
# (Pillow keeps any multi-band image at 4 bytes a pixel). Flattening alpha: crop, RGBA, background,
# composite, RGB (20, measured 20). Palette, CMYK...: crop and RGB. High-bit data: the crop, its bytes
# as an array, float32 and the scaled float32, i.e. twice the stored width and 10 (I;16: 14, I/F: 18).
_BAND_BYTES = {"alpha": 24, "convert": 8, "bilevel": 2, "plain": 0}
# Bytes a pixel of the result (after reduction): 8-bit data end as a grey image, its bytes and the
# float32 array (an RGB result and its grey conversion alive together take less); high-bit data as
# the float32 array, which `on_8bit_levels` snaps in place.
_RESULT_BYTES = {"high_bit": 4}  # 6 for 8-bit data
# Bytes a pixel a decoder holds beside the stored pixels while load() runs, by Pillow's format or codec
# name. Pillow reads every WebP, animated or not, through libwebp's animation decoder: its RGBA canvas,
# the previous frame's and the frame handed over as a bytes copy (measured 16 bytes a pixel at the peak,
# stored pixels included; a 6000 x 6000 WebP peaked at 550 MB). A run-length BMP is expanded by Python
# into a growing bytearray, then copied to bytes (measured 3 bytes a pixel with the stored one). Other
# formats decode straight into the stored pixels.
_DECODER_BYTES = {"WEBP": 12, "bmp_rle": 2}


def reduction(size: tuple[int, int], target_size: int | None) -> int:
    """The integer factor both sides are divided by: both stay >= target_size (1: none)."""
    factor = min(size) // target_size if target_size else 1
    return factor if factor >= 2 else 1


def peak_bytes(image: Image.Image, target_size: int | None) -> int:
    """Memory `load()` and `to_gray` will hold at the peak, from the header of an opened image
    (after any JPEG draft): the stored pixels as Pillow keeps them and the decoder's own buffers, one
    band's copies, the result."""
    width, height = image.size
    factor = reduction(image.size, target_size)
    rows = min(_band_rows(width, height, factor), height)
    result = -(-width // factor) * -(-height // factor)
    path, stored = _path(image), stored_bytes_per_pixel(image.mode)
    # High-bit: 2 bytes a pixel above the two float32 copies, for a band that is the whole image
    # (a 2000 x 2000 float TIFF peaked at 83 MB, counted 77 without them).
    band = rows * width * (2 * stored + 10 if path == "high_bit" else _BAND_BYTES[path])
    codecs = {image.format, *(tile[0] for tile in getattr(image, "tile", ()))}  # tile: files only
    decoding = stored + max(_DECODER_BYTES.get(name, 0) for name in codecs)
    libtiff = _libtiff_buffer_bytes(image) if "libtiff" in codecs else 0
    return width * height * decoding + libtiff + band + result * _RESULT_BYTES.get(path, 6)


def _libtiff_buffer_bytes(tiff: Image.Image) -> int:
    """A compressed TIFF goes through libtiff, which decodes one strip or tile at a time into a buffer
    of its decoded size: tiny for the usual 8 KB to 64 KB strips, but a file stored as one strip (as
    some writers do) holds the whole image a second time (a 3000 x 3000 grey TIFF: 17 MB, counted 9).
    Subsampled YCbCr is read as RGBA, 4 bytes a pixel."""
    tags = tiff.tag_v2
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = int(tags.get(277, 1) or 1)
    bits_per_pixel = max(sum(bits), bits[0] * samples, 32 if tags.get(262) == 6 else 0)
    if 322 in tags and 323 in tags:  # tiled
        columns, rows = int(tags[322]), int(tags[323])
    else:
        columns, rows = tiff.width, min(int(tags.get(278, tiff.height) or tiff.height), tiff.height)
    return rows * -(-columns * bits_per_pixel // 8)


def coefficient_bytes(jpeg: Image.Image, size: tuple[int, int]) -> int:
    """What libjpeg holds to decode a JPEG in more than one scan: every DCT coefficient of the full-size
    image (`size`, before any draft: DCT scaling does not shrink it) until the last scan, 2 bytes each,
    64 a block, each component at its sampling with its blocks padded to whole MCUs. Measured 3 bytes a
    pixel for a 4:2:0 colour film, 2 for grey, 8 for CMYK (a 6000 x 6000 progressive CMYK JPEG: 279 MB)."""
    width, height = size
    h_max = max(h for _, h, _, _ in jpeg.layer)
    v_max = max(v for _, _, v, _ in jpeg.layer)
    total = 0
    for _, h, v, _ in jpeg.layer:
        columns, rows = -(-width * h // (h_max * 8)), -(-height * v // (v_max * 8))
        total += -(-columns // h) * h * -(-rows // v) * v
    return total * 64 * 2


def stored_bytes_per_pixel(mode: str) -> int:
    """What Pillow allocates a pixel: 1 byte for L, P and 1, 2 for I;16, 4 for everything else."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def to_gray(image: Image.Image, target_size: int | None) -> tuple[np.ndarray, float]:
    """Grey float32 in [0, 1] (reduced by `reduction`) and the colourfulness of a colour image."""
    factor = reduction(image.size, target_size)
    if image.mode in HIGH_BIT_MODES:
        return _high_bit_gray(image, factor), 0.0
    path = _path(image)
    if path == "plain" or _band_rows(*image.size, factor) >= image.height:
        image = _converted(image, path)  # one band: the whole image, never cropped
        if factor > 1:
            image = image.reduce(factor)
    else:
        image = _reduced_in_bands(image, path, factor)
    colourfulness = 0.0
    if image.mode == "RGB":
        colourfulness = colourfulness_of(image)
        image = image.convert("L")
    pixels = np.asarray(image, dtype=np.float32)
    pixels *= np.float32(1 / 255)
    return pixels, colourfulness


def _path(image: Image.Image) -> str:
    mode = image.mode
    if mode in HIGH_BIT_MODES:
        return "high_bit"
    if mode == "1":
        return "bilevel"
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return "alpha"
    return "plain" if mode in ("L", "RGB") else "convert"


def _converted(image: Image.Image, path: str) -> Image.Image:
    """L or RGB: what the grey conversion starts from."""
    if path == "bilevel":
        return image.convert("L")
    if path == "alpha":
        return _flatten_alpha(image)
    if path == "convert":
        return image.convert("RGB")  # palette, CMYK, YCbCr, LAB...
    return image


def _band_rows(width: int, height: int, factor: int) -> int:
    """Rows in one band: a whole multiple of the reduction factor."""
    return max(1, _BAND_PIXELS // (width * factor)) * factor


def _reduced_in_bands(image: Image.Image, path: str, factor: int) -> Image.Image:
    rows = _band_rows(*image.size, factor)
    result = None
    for top in range(0, image.height, rows):
        band = _converted(image.crop((0, top, image.width, min(top + rows, image.height))), path)
        if factor > 1:
            band = band.reduce(factor)
        if result is None:
            result = Image.new(band.mode, (band.width, -(-image.height // factor)))
        result.paste(band, (0, top // factor))
    return result


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent areas become white: that is how the browser and every image viewer
    showed the file to the person who uploaded it (and how the not-CXR training data
    were flattened)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def colourfulness_of(rgb: Image.Image) -> float:
    """Mean per-pixel channel spread (max - min over R, G, B), on a box-reduced copy of
    about 64 pixels a side, so the cost does not grow with the image."""
    factor = max(1, min(rgb.size) // 64)
    small = np.asarray(rgb.reduce(factor) if factor > 1 else rgb)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float(spread.mean()) / 255.0


def _high_bit_gray(image: Image.Image, factor: int) -> np.ndarray:
    """16-bit, 32-bit or float data, scaled by the whole image's extremes (`scale_with`) one band at a
    time into the (shrunk) float32 result; NaN or infinity is refused before anything is scaled."""
    width, height = image.size
    rows = _band_rows(width, height, factor)
    if rows >= height:  # one band: the whole image at once, scaled by its extremes as the bands are
        values = np.asarray(image)
        return on_8bit_levels(shrink_by(scale_with(values, *_extremes(values)), factor))
    bands = [(top, min(top + rows, height)) for top in range(0, height, rows)]
    extremes = [_extremes(_rows(image, top, bottom)) for top, bottom in bands]
    low, high = min(low for low, _ in extremes), max(high for _, high in extremes)
    used = (height // factor) * factor  # shrink_by leaves out the rows after the last whole box
    result = np.empty((height // factor, width // factor), np.float32)
    for top, bottom in bands:
        bottom = min(bottom, used)
        if top >= bottom:
            break
        result[top // factor : bottom // factor] = shrink_by(scale_with(_rows(image, top, bottom), low, high), factor)
    return on_8bit_levels(result)


def _extremes(values: np.ndarray) -> tuple[int, int] | tuple[float, float]:
    """(min, max) as scale_to_unit takes them (ints for integer data); NaN or infinity is refused."""
    if values.dtype.kind not in "ui":
        refuse_non_finite(values)
    return scaling_extremes(values)


def _rows(image: Image.Image, top: int, bottom: int) -> np.ndarray:
    whole = (top, bottom) == (0, image.height)
    return np.asarray(image if whole else image.crop((0, top, image.width, bottom)))
