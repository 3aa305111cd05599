"""The decode budget bounds the true peak of every decode path (docs/security.md, "Memory budget per
decode"), and the banded grey conversion that keeps the peak near the stored pixels gives exactly the
pixels of the whole-image steps it replaced."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate

from benchmarks.decode_memory import measure
from tests.image_samples import dicom, dicom_jpeg, float_film, jpeg
from webapp.inference import raster
from webapp.inference.decode import decode
from webapp.inference.image import DEFAULT_DECODE_MEMORY_MB, DecodeError, on_8bit_levels, scale_to_unit, shrink

MODES = ("L", "LA", "RGB", "RGBA", "P", "P+t", "1", "CMYK", "I;16", "I", "F")


def noisy(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """An image of `mode` with noise in every band, so that any rounding difference shows."""
    rng = np.random.default_rng(seed)
    if mode == "I;16B":  # big-endian 16-bit, as some TIFFs store it (Pillow has no extremes for it)
        return Image.frombytes(mode, (width, height), rng.integers(0, 65536, (height, width)).astype(">u2").tobytes())
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 4096, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-70_000, 90_000, (height, width), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.normal(0, 300, (height, width)).astype(np.float32))
    bands = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode, 1)
    samples = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    if mode in ("L", "P", "P+t", "1"):
        image = Image.fromarray(samples[..., 0])
        if mode == "1":
            return image.convert("1")
        image = image.quantize(64) if mode != "L" else image
        if mode == "P+t":
            image.info["transparency"] = 3
        return image
    return Image.frombytes(mode, (width, height), samples.tobytes())


def whole_image_grey(image: Image.Image, target_size: int) -> tuple[np.ndarray, float]:
    """The steps as they were before bands: each conversion made on the whole image at once."""
    if image.mode in raster.HIGH_BIT_MODES:
        return on_8bit_levels(shrink(scale_to_unit(np.asarray(image)), target_size)), 0.0
    image = raster._converted(image, raster._path(image))
    factor = raster.reduction(image.size, target_size)
    if factor > 1:
        image = image.reduce(factor)
    colourfulness = 0.0
    if image.mode == "RGB":
        colourfulness = raster.colourfulness_of(image)
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) * np.float32(1 / 255), colourfulness


@pytest.mark.parametrize("mode", (*MODES, "I;16B"))
@pytest.mark.parametrize(("size", "target"), [((641, 487), 224), ((641, 487), 100), ((333, 250), 224)])
def test_bands_give_the_whole_image_pixels(mode, size, target, monkeypatch):
    """Odd sizes (boxes cut at the edges), factors 1, 2 and 4, and bands of a few rows each."""
    monkeypatch.setattr(raster, "_BAND_PIXELS", 4000)
    image = noisy(mode, *size)
    expected, colour = whole_image_grey(image, target)
    pixels, colourfulness = raster.to_gray(image, target)
    assert pixels.dtype == np.float32 and pixels.shape == expected.shape
    assert np.array_equal(pixels, expected) and colourfulness == colour


def film(mode: str, side: int) -> bytes:
    """A side x side file of `mode` with a smooth pattern (quick to compress; memory does not depend
    on the content). DICOM: 12 bits stored in 16, the lowest value above 0: its costliest grey path."""
    y, x = np.ogrid[:side, :side]
    grey = ((x + 3 * y) % 256).astype(np.uint8)
    if mode == "DICOM":
        return dicom(grey.astype(np.uint16) * 15 + 100, bits_stored=12)
    if mode.startswith("DICOM float"):  # rescaled: the grey chain's float64 steps
        values = grey.astype(np.float32) * 3.5 - 100
        return float_film(values, double=mode.endswith("64"), RescaleSlope=2.5, RescaleIntercept=-10)
    if mode == "DICOM 8-bit":
        return dicom(grey // 2 + 5)
    if mode == "DICOM RGB":
        return dicom(np.stack([grey, grey // 2, grey], axis=-1))
    if mode == "BMP RLE":
        return bmp_rle8(grey)
    if mode == "TIFF one strip":  # compressed, stored as a single strip (libtiff decodes it whole)
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, "TIFF", compression="tiff_deflate", strip_size=2**31)
        return buffer.getvalue()
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray((grey.astype(dtype) - (128 if mode != "I;16" else 0)) * 17)
    elif mode in ("L", "1"):
        image = Image.fromarray(grey if mode == "L" else grey > 127)
    elif mode in ("P", "P+t"):
        image = Image.frombytes("P", (side, side), grey.tobytes())
        image.putpalette(list(range(256)) * 3)
    else:
        bands = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "WEBP": 3}.get(mode, 3)  # JPEG: RGB
        samples = np.repeat(grey[..., None], bands, axis=-1).tobytes()
        image = Image.frombytes(mode if mode in ("LA", "RGB", "RGBA", "CMYK") else "RGB", (side, side), samples)
    buffer = io.BytesIO()
    fmt = "TIFF" if mode in ("I", "F", "CMYK") else mode.split()[0] if mode.startswith(("JPEG", "WEBP")) else "PNG"
    image.save(buffer, fmt, **({"transparency": 3} if mode == "P+t" else {"progressive": "progressive" in mode}))
    return buffer.getvalue()


def bmp_rle8(grey: np.ndarray) -> bytes:
    """A run-length (RLE8) grey BMP: each row as literal runs of 254 pixels (Pillow writes no RLE)."""
    height, width = grey.shape
    runs = b"".join(
        b"".join(bytes([0, len(run)]) + run + bytes(len(run) % 2) for run in _runs(row.tobytes(), 254)) + b"\0\0"
        for row in grey[::-1]
    )
    pixels = runs + b"\0\1"
    palette = b"".join(bytes([level, level, level, 0]) for level in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _runs(row: bytes, size: int) -> list[bytes]:
    return [row[start : start + size] for start in range(0, len(row), size)]


def peak_mb(mode: str, side: int, tmp_path: Path) -> float | None:
    """The growth of a fresh process's peak resident memory over one decode of the film, after a
    64 px film of the same kind has been decoded (the decoder's lazy imports are not the file's)."""
    result = measure(film(mode, 64), film(mode, side), tmp_path)
    return None if result is None else result["peak_growth_mb"]


def counted_mb(data: bytes) -> float:
    """What the budget counts for a file: the refusal under a 1 MB budget says it (1 if it fits)."""
    try:
        decode(data, target_size=224, memory_mb=1)
    except DecodeError as refused:
        return float(re.search(r"need (\d+) MB", refused.message).group(1))
    return 1.0


@pytest.mark.parametrize(
    "mode",
    (
        *MODES,
        "JPEG",
        "JPEG progressive",
        "WEBP",
        "BMP RLE",
        "TIFF one strip",
        "DICOM",
        "DICOM 8-bit",
        "DICOM RGB",
        "DICOM float32",
        "DICOM float64",
    ),
)
def test_the_budget_counts_the_true_peak(mode, tmp_path):
    """Each mode's peak resident growth for one decode is within what the budget counts for it (plus
    2 MB of rounding: the count is given in whole MB, and memory is taken in pages). Before, the count
    was the stored samples only: a 2000 x 2000 grey+alpha PNG counted at 8 MB peaked near 76 MB. WebP
    (libwebp's own canvases): counted 16 MB, peaked at 61 MB; a run-length BMP (expanded in Python):
    counted 4 MB, peaked at 12 MB; a progressive JPEG (libjpeg buffers every coefficient of the whole
    image, whatever the DCT scaling): counted under 1 MB, peaked at 12 MB; a compressed TIFF in one strip
    (libtiff's strip buffer): counted 4 MB, peaked at 8; a rescaled float32 DICOM (the grey chain in
    float64 on the whole film): counted 77 MB, peaked at 92."""
    side = 2000
    counted, peak = counted_mb(film(mode, side)), peak_mb(mode, side, tmp_path)
    if peak is None:
        pytest.skip("the peak resident memory cannot be reset here (Linux's /proc/self/clear_refs)")
    assert peak <= counted + 2, (counted, peak)


def multi_frame(kind: str, side: int, frames: int = 20) -> bytes:
    """A film of `frames` side x side frames: 12 bits in 16, 8-bit RGB, or JPEG Baseline (a frame a fragment)."""
    y, x = np.ogrid[:side, :side]
    grey = ((x * 7 + 3 * y) % 3900 + 100).astype(np.uint16)
    if kind == "grey":
        return dicom(np.stack([grey] * frames), bits_stored=12)
    one = dicom_jpeg((grey >> 4).astype(np.uint8)) if kind == "JPEG" else None
    ds = pydicom.dcmread(io.BytesIO(one or dicom(np.stack([(grey >> 4).astype(np.uint8)] * 3, axis=-1))))
    if kind == "JPEG":
        ds.PixelData = encapsulate([jpeg(np.asarray(noisy("L", side, side)), quality=100)] * frames)
    else:
        ds.PixelData = ds.PixelData * frames
    ds.NumberOfFrames = frames
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["grey", "RGB", "JPEG", "grey without preamble"])
def test_a_multi_frame_dicom_is_counted_by_its_one_frame(kind, tmp_path):
    """Only the first frame is decoded, and only it is counted; the film's other frames must not be
    copied on the way. 20 frames of 1000 x 1000: a 16-bit film (a 40 MB file) counted 15 MB and peaked at
    42 (the file copied to look for its file meta information, and again as the header's Pixel Data); an
    RGB film (10 frames) counted 17 and peaked at 31 (the colour decoder was given the whole data set); a
    JPEG film (30 MB of fragments) counted 15 and peaked at 36 (every fragment read to find the first
    frame's header). A file without its 128-byte preamble is copied to restore it, and the copy is counted
    (the 16-bit film without it peaked at 48 MB, counted 15)."""
    films = [multi_frame(kind.split()[0], side, 10 if kind == "RGB" else 20) for side in (64, 1000)]
    films = [film[128:] if kind.endswith("without preamble") else film for film in films]
    counted, result = counted_mb(films[1]), measure(*films, tmp_path)
    if result is None:
        pytest.skip("the peak resident memory cannot be reset here (Linux's /proc/self/clear_refs)")
    assert result["outcome"] == "decoded" and result["peak_growth_mb"] <= counted + 2, (counted, result)


def test_turning_an_oriented_film_is_counted():
    """EXIF orientation 6 turns the stored image: a second stored copy, counted before it is made."""
    grey = np.asarray(noisy("L", 2000, 1000))
    upright, turned = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey).save(upright, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(grey).save(turned, "PNG", exif=exif)
    assert decode(upright.getvalue(), target_size=224, memory_mb=3).width == 2000  # 2.6 MB
    with pytest.raises(DecodeError) as refused:
        decode(turned.getvalue(), target_size=224, memory_mb=3)
    assert "need 4 MB" in refused.value.message  # two copies of 1.9 MB
    assert decode(turned.getvalue(), target_size=224, memory_mb=4).width == 1000


def test_the_default_budget_takes_ordinary_films():
    """A 6000 x 6000 16-bit film as DICOM (the largest grey film the pixel limit lets through, and the
    costliest: it counts 410 MB) decodes under the default budget, so the budget refuses no grey film
    that was accepted before it counted true peaks; a 3000 x 3000 JPEG and a 4000 x 4000 RGB PNG are far
    inside it."""
    assert DEFAULT_DECODE_MEMORY_MB == 512
    side = 6000
    assert decode(dicom(np.asarray(noisy("I;16", side, side)), bits_stored=12), target_size=224).width == side
    assert decode(film("JPEG", 3000), target_size=224).width == 3000
    rgb = Image.new("RGB", (4000, 4000))
    assert raster.peak_bytes(rgb, 224) < 100 * 2**20


def fragment_flood(empty: int) -> bytes:
    """A 64 x 64 JPEG Baseline film whose one frame goes on in `empty` empty fragments after the JPEG."""
    grey = np.asarray(noisy("L", 64, 64))
    ds = pydicom.dcmread(io.BytesIO(dicom_jpeg(grey)))
    encoded = jpeg(grey)
    encoded += bytes(len(encoded) % 2)

    def item(value: bytes) -> bytes:
        return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(value)) + value

    ds.PixelData = item(b"") + item(encoded) + item(b"") * empty + b"\xfe\xff\xdd\xe0" + bytes(4)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_frame_in_many_fragments_counts_them(tmp_path):
    """pydicom holds every fragment of the frame as a Python object, twice (the header check, the decoder):
    a 64 x 64 JPEG film in 50,000 fragments counted under 1 MB and peaked at 6.5 (5 million fragments, a
    38 MB upload: 612 MB and 17 s). The fragments are counted from their item headers before any is read."""
    counted, result = counted_mb(fragment_flood(50_000)), measure(fragment_flood(0), fragment_flood(50_000), tmp_path)
    if result is None:
        pytest.skip("the peak resident memory cannot be reset here (Linux's /proc/self/clear_refs)")
    assert result["outcome"] == "decoded" and result["peak_growth_mb"] <= counted + 2, (counted, result)


def test_a_frame_in_more_fragments_than_any_writer_uses_is_refused():
    with pytest.raises(DecodeError) as refused:
        decode(fragment_flood(200_000), target_size=224)
    assert refused.value.code == "corrupt_dicom" and "fragments" in refused.value.message
