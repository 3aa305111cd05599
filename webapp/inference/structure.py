"""Structural checks on JPEG and PNG uploads, made before any decoder sees the bytes.

Pillow and libjpeg accept files whose structure alone makes them costly or wrong to decode:
- thousands of progressive scans, each one a full pass over the coefficient buffer (a 267 KB
  file took 9.6 s per decode);
- millions of empty APPn/COM segments or PNG chunks, each parsed and kept by Pillow (48 MB of
  empty APP1 segments took 25 s and 1.5 GB);
- a JPEG cut short with an EOI appended: libjpeg only warns and fills the rest with grey, and a
  progressive file that stops after its first scans decodes as a blur, and either would get a
  verdict.

The walks read only marker and chunk headers; entropy-coded data is skipped by a regular
expression (C speed), so a normal film costs a few dozen iterations. The walks refuse only what
they can prove; anything else malformed is left to the decoder, which refuses it as before.
"""

from __future__ import annotations

import re
import struct

# Imported here, not when first needed: without it every JPEG would be refused as damaged.
import simplejpeg
from PIL import Image

from .image import DecodeError

# Real films carry a few dozen segments (APPn metadata, ICC chunks, tables); Pillow's cost grows
# with every one it parses.
MAX_JPEG_SEGMENTS = 1000
# A progressive film has about 10 scans; libjpeg-turbo's own guard is 500, which still lets a small
# file cost seconds per decode. Each scan is a full pass over the image's coefficients.
MAX_JPEG_SCANS = 100
# Non-image-data PNG chunks: a few in real files, each parsed by Pillow.
MAX_PNG_OTHER_CHUNKS = 1000
# Image-data chunks (IDAT, fdAT): encoders split the data in 8 to 64 KB chunks (libpng, Pillow), so
# one per KB of file is far above any encoder, and Pillow's per-chunk cost (about 1.5 us) stays
# under 100 ms even for a 50 MB upload.
PNG_BYTES_PER_DATA_CHUNK = 1024
PNG_DATA_CHUNKS_ALLOWANCE = 64

# The next marker: 0xFF followed by anything but a stuffed zero, a restart marker (RST0-7 live
# inside entropy-coded data) or another 0xFF (fill bytes before a marker).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SEQUENTIAL_HUFFMAN_SOF = frozenset({0xC0, 0xC1})
_STANDALONE = frozenset({0x01, 0xD8})  # TEM, SOI: no length field
_SOS = 0xDA
_EOI = 0xD9

# What check_jpeg leaves to do to tell a complete JPEG from one cut short with an EOI appended.
GREY_FILL_TEST = "grey-fill test"  # one sequential Huffman scan: `may_hide_a_grey_fill`, then if need be the decode
FULL_CHECK = "full check"  # `check_entropy_data`

_TRUNCATED = DecodeError(
    "truncated",
    "The image file is incomplete (truncated): it ends before the whole picture is stored; upload it again.",
)


def check_jpeg(data: bytes) -> str:
    """Refuse a JPEG with too many segments or scans, a repeated or out-of-order progressive scan,
    a bit depth other than 8, or scans that stop before every component is complete.

    Returns what is still needed to tell a complete file from one cut short with an EOI appended
    (libjpeg only warns about that): GREY_FILL_TEST or FULL_CHECK.
    """
    pos, segments, scans = 2, 0, 0
    components: list[int] | None = None
    frame = 0
    progressive = False
    coverage: dict[int, list[int | None]] = {}  # progressive: component -> lowest bit coded per coefficient
    scanned: set[int] = set()  # sequential: components seen in a scan
    while True:
        found = _NEXT_MARKER.search(data, pos)
        if found is None:
            return FULL_CHECK  # no EOI: the decoder refuses the file as truncated
        marker = data[found.start() + 1]
        if marker == _EOI:
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise DecodeError(
                "corrupt_image",
                f"The JPEG file has more than {MAX_JPEG_SEGMENTS} segments, far more than any real image, "
                "and is refused.",
            )
        if marker in _STANDALONE:
            pos = found.end()
            continue
        start = found.end()
        if start + 2 > len(data):
            return FULL_CHECK
        (length,) = struct.unpack_from(">H", data, start)
        if length < 2:
            return FULL_CHECK
        if marker in _SOF and components is None:
            components = _frame(data, start + 2, length - 2)
            if components is None:
                return FULL_CHECK
            frame = marker
            progressive = marker in _PROGRESSIVE_SOF
            coverage = {c: [None] * 64 for c in components}
        elif marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise DecodeError(
                    "corrupt_image",
                    f"The JPEG file has more than {MAX_JPEG_SCANS} scans (a real progressive JPEG has about 10), "
                    "and is refused.",
                )
            scan = _scan(data, start + 2, length - 2)
            if components is None or scan is None or not set(scan[0]) <= set(components):
                return FULL_CHECK  # malformed: libjpeg refuses it
            if progressive:
                _cover(coverage, *scan)
            else:
                scanned.update(scan[0])
        pos = start + length
    if components is None or scans == 0:
        return FULL_CHECK
    if progressive:
        if any(bit != 0 for bits in coverage.values() for bit in bits):
            raise _TRUNCATED
        # Every scan is there, but a cut inside one's data leaves no mark in the pixels: the blocks
        # after the cut miss a refinement (up to 57 grey levels on the test pattern).
        return FULL_CHECK
    if not set(components) <= scanned:
        raise _TRUNCATED
    # One scan: a cut leaves every component grey to the end. With a scan per component, a cut in
    # the last one greys only that component, which the last-pixel test cannot see.
    return GREY_FILL_TEST if frame in _SEQUENTIAL_HUFFMAN_SOF and scans == 1 else FULL_CHECK


def _frame(data: bytes, at: int, size: int) -> list[int] | None:
    if size < 6:
        return None
    precision, count = data[at], data[at + 5]
    if precision != 8:
        raise DecodeError(
            "unsupported_type",
            f"The file is a {precision}-bit JPEG, which this server cannot decode. "
            "Export the film as a 16-bit PNG or as DICOM and upload that.",
        )
    if size < 6 + 3 * count:
        return None
    return [data[at + 6 + 3 * i] for i in range(count)]


def _scan(data: bytes, at: int, size: int) -> tuple[list[int], int, int, int, int] | None:
    count = data[at] if size > 0 else 0
    if count == 0 or size < 1 + 2 * count + 3:
        return None
    selectors = [data[at + 1 + 2 * i] for i in range(count)]
    spectral_start, spectral_end, approximation = data[at + 1 + 2 * count : at + 4 + 2 * count]
    return selectors, spectral_start, spectral_end, approximation >> 4, approximation & 15


def _cover(coverage: dict[int, list[int | None]], selectors, first: int, last: int, high: int, low: int) -> None:
    """T.81 G.1.1.1: a coefficient's first scan has Ah = 0, each refinement has Ah = the previous Al
    and Al = Ah - 1. A scan outside that order is how a scan bomb repeats itself."""
    if first > last or last > 63:
        return  # libjpeg refuses it
    for component in selectors:
        bits = coverage[component]
        for k in range(first, last + 1):
            done = bits[k]
            if (high == 0 and done is not None) or (high != 0 and (done != high or low != high - 1)):
                raise DecodeError(
                    "corrupt_image",
                    "The JPEG file repeats a progressive scan or has them out of order; the file is damaged.",
                )
            bits[k] = low


def check_png(data: bytes) -> None:
    """Refuse a PNG with more chunks than any encoder writes for its size."""
    pos, other, image_data = 8, 0, 0
    limit = PNG_DATA_CHUNKS_ALLOWANCE + len(data) // PNG_BYTES_PER_DATA_CHUNK
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            return
        if kind in (b"IDAT", b"fdAT"):
            image_data += 1
        else:
            other += 1
        if image_data > limit or other > MAX_PNG_OTHER_CHUNKS:
            raise DecodeError(
                "corrupt_image",
                "The PNG file is split into far more chunks than any real image, and is refused.",
            )
        pos += 12 + length


# libjpeg-turbo warnings that mean the pixels are not what the file was meant to hold: data cut
# short (the rest is filled with grey), undecodable entropy data, a broken restart sequence.
_TRUNCATION_WARNINGS = ("premature end",)
_DAMAGE_WARNINGS = ("huffman", "instead of rst", "progression sequence")


# What libjpeg writes for a block it has no data for (all coefficients zero, level-shifted), as
# Pillow delivers it: the grey of a JPEG cut short.
_GREY_FILL = {"L": 128, "RGB": (128, 128, 128)}


def may_hide_a_grey_fill(image: Image.Image) -> bool:
    """False when the last stored pixel of a decoded sequential JPEG is not libjpeg's grey fill: the
    last block was then decoded from real data, so the file was not cut short. Costs one pixel read,
    and spares almost every film the second decode of `check_entropy_data`."""
    fill = _GREY_FILL.get(image.mode)
    return fill is None or image.getpixel((image.width - 1, image.height - 1)) == fill


def check_entropy_data(data: bytes, colour_space: str | None) -> None:
    """Decode the JPEG once with libjpeg-turbo stopping on its first warning (simplejpeg's strict
    mode) and refuse it when that warning means lost or damaged pixels. Pillow ignores libjpeg's
    warnings, so a JPEG cut short with an EOI appended decodes with a grey fill.

    Decoded at 1/8 scale and as grey (only Y is reconstructed): the cost is essentially the
    entropy decoding. Other warnings (an unknown JFIF revision, an Adobe transform code) are
    harmless and leave the file to Pillow, as does any error, which Pillow then meets itself."""
    try:
        simplejpeg.decode_jpeg(
            data, colorspace="CMYK" if colour_space == "CMYK" else "GRAY", strict=True, min_height=1, min_width=1
        )
    except ValueError as exc:
        text = str(exc).lower()
        if any(w in text for w in _TRUNCATION_WARNINGS):
            raise _TRUNCATED from exc
        if any(w in text for w in _DAMAGE_WARNINGS):
            raise DecodeError("corrupt_image", "The image file is damaged and cannot be decoded.") from exc
