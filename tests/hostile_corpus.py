"""Malformed and hostile uploads, built in memory: what a server meets sooner or later.

Each entry is an upload a person or a script could send (a file name and its bytes)
and the refusal code(s) `decode()` must answer with. Several entries also carry a
hostile file name (path separators, a NUL byte, markup) so the upload tests see them
on the refusal path too.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

from tests.image_samples import dicom, dicom_jpeg, encode, gradient, jpeg, png

TRUNCATED_OR_CORRUPT = ("truncated", "corrupt_image")


@dataclass(frozen=True)
class Hostile:
    filename: str
    data: bytes
    codes: tuple[str, ...]  # any of these refusal codes is a correct answer

    @property
    def name(self) -> str:
        return self.filename.encode("unicode_escape").decode("ascii")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def crafted_png(
    width: int, height: int, *, bit_depth: int = 8, colour: int = 0, rows: bytes | None = None, extra: bytes = b""
) -> bytes:
    """A PNG with any header we like. Without `rows`, the image data is all-zero rows,
    compressed: a bomb costs a few kB on the wire and width*height in memory."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    if rows is None:
        row_bytes = 1 + (width * bit_depth + 7) // 8
        compressor = zlib.compressobj(9)
        row = bytes(row_bytes)
        chunks = [compressor.compress(row) for _ in range(min(height, 20_000))]
        rows = b"".join(chunks) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")
    )


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim another size."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _jpeg_with_comment(comment: bytes) -> bytes:
    data = jpeg()
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return data[:2] + segment + data[2:]


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_parts(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) for each segment between SOI and EOI, a scan with its entropy-coded data."""
    parts, pos = [], 2
    while True:
        found = _NEXT_MARKER.search(data, pos)
        marker = data[found.start() + 1]
        if marker == 0xD9:
            return parts
        end = found.end() + struct.unpack_from(">H", data, found.end())[0]
        if marker == 0xDA:
            end = _NEXT_MARKER.search(data, end).start()
        parts.append((marker, data[found.start() : end]))
        pos = end


def progressive_jpeg() -> bytes:
    return jpeg(quality=90, progressive=True)


def scan_bomb(repeats: int) -> bytes:
    """A progressive JPEG with one of its AC scans (and the Huffman table before it) repeated: each
    copy is another full pass over the coefficients, so decode time grows with the file."""
    parts = jpeg_parts(progressive_jpeg())
    at = next(i for i, (m, b) in enumerate(parts) if m == 0xDA and b[5 + 2 * b[4]] > 0)
    table = next(b for m, b in reversed(parts[:at]) if m == 0xC4)
    return b"\xff\xd8" + b"".join(b for _, b in parts) + (table + parts[at][1]) * repeats + b"\xff\xd9"


def progressive_first_scans(count: int) -> bytes:
    """A progressive JPEG cut after its first `count` scans, with an EOI appended."""
    parts = jpeg_parts(progressive_jpeg())
    scans = [i for i, (m, _) in enumerate(parts) if m == 0xDA]
    return b"\xff\xd8" + b"".join(b for _, b in parts[: scans[count - 1] + 1]) + b"\xff\xd9"


def jpeg_cut_with_eoi(fraction: float, data: bytes | None = None) -> bytes:
    """A JPEG cut inside its image data, with an EOI appended: libjpeg only warns."""
    data = data or jpeg()
    return data[: int(len(data) * fraction)] + b"\xff\xd9"


def jpeg_with_precision(bits: int) -> bytes:
    """A JPEG whose frame header claims another sample precision (as a 12-bit dcmcjpeg export does)."""
    data = bytearray(jpeg())
    data[data.index(b"\xff\xc0") + 4] = bits
    return bytes(data)


def png_with_chunks(kind: bytes, count: int) -> bytes:
    """A valid PNG with `count` empty chunks of `kind` before its image data."""
    data = png()
    at = data.index(b"IDAT") - 4
    return data[:at] + _png_chunk(kind, b"") * count + data[at:]


def float_tiff(value: float) -> bytes:
    """A float TIFF of the test pattern with a corner set to `value`."""
    pixels = gradient().astype(np.float32) / 255
    pixels[:10, :10] = value
    return encode(Image.fromarray(pixels), "TIFF")


def _bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.fromarray(gradient(64, 64)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def _tiff_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.fromarray(gradient(64, 64)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, data, entry + 8, width if tag == 256 else height)
    return bytes(data)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _dicom_with_rows(rows: int, columns: int) -> bytes:
    """A DICOM whose Rows/Columns claim far more pixels than its data holds."""
    data = bytearray(dicom(gradient(64, 64)))
    for tag, value in ((b"\x28\x00\x10\x00", rows), (b"\x28\x00\x11\x00", columns)):
        at = data.index(tag + b"US")
        struct.pack_into("<H", data, at + 8, value)
    return bytes(data)


def _dicom_smuggling_jpeg(width: int, height: int) -> bytes:
    """A JPEG DICOM that declares 64x64 but whose compressed frame is far larger."""
    ds = dcmread(io.BytesIO(dicom_jpeg(gradient(64, 64))))
    ds.PixelData = encapsulate([jpeg(np.zeros((height, width), np.uint8), quality=50)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def dicom_j2k_tile_flood(side: int = 255) -> bytes:
    """A 2 KB JPEG 2000 DICOM of `side` x `side` pixels whose codestream header (SIZ) claims 1 x 1 pixel
    tiles: side**2 tiles, each of which openjpeg sets up before reading any."""
    codestream = bytearray(encode(Image.fromarray(gradient(64, 64)), "JPEG2000", no_jp2=True))
    struct.pack_into(">IIIIII", codestream, 8, side, side, 0, 0, 1, 1)  # Xsiz, Ysiz, offsets, XTsiz, YTsiz
    ds = dcmread(io.BytesIO(dicom(gradient(side, side).astype(np.uint8))))
    ds.PixelData = encapsulate([bytes(codestream) + b"\x00" * (len(codestream) % 2)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def dicom_with_cut_frame(syntax: str, fraction: float = 0.5) -> bytes:
    """A 256 x 256 compressed DICOM whose frame stops at `fraction` of its bytes (no EOI)."""
    if syntax == "jpeg":
        ds = dcmread(io.BytesIO(dicom_jpeg(gradient())))
    else:  # JPEG-LS lossless, 12 bits stored
        ds = dcmread(io.BytesIO(dicom(gradient(levels=4096), bits_stored=12)))
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    cut = frame[: int(len(frame) * fraction) // 2 * 2]
    ds.PixelData = encapsulate([cut])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def dicom_holding_jpeg(encoded: bytes) -> bytes:
    """An 8-bit JPEG Baseline DICOM whose one frame is `encoded`, as it is."""
    ds = dcmread(io.BytesIO(dicom_jpeg(gradient())))
    ds.PixelData = encapsulate([encoded + bytes(len(encoded) % 2)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def dicom_with_length(keyword_tag: bytes, length: int) -> bytes:
    """A 12-bit film whose element `keyword_tag` (group, element and VR as written) has its 2-byte length
    replaced: one damaged byte, after which pydicom reads the rest of the file as other elements."""
    data = bytearray(dicom(gradient(levels=4096), bits_stored=12))
    struct.pack_into("<H", data, data.index(keyword_tag) + 6, length)
    return bytes(data)


def _dicom_preamble(preamble: bytes) -> bytes:
    data = dicom(gradient(64, 64))
    return preamble.ljust(128, b"\x00") + data[128:]


def hostile_corpus() -> list[Hostile]:
    rng = random.Random(1234)
    good_jpeg = jpeg()
    good_png = png()
    good_webp = encode(Image.fromarray(gradient()).convert("RGB"), "WEBP", quality=90)
    good_dicom = dicom(gradient(levels=4096), bits_stored=12)
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="512" '
        b'height="512"><script>alert(document.cookie)</script><rect width="512" '
        b'height="512"/></svg>'
    )
    pdf = (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type "
        b"/Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )
    html = (
        b"<!DOCTYPE html>\n<html><head><title>x</title></head><body>"
        b"<script>fetch('/api/v1/predictions')</script></body></html>"
    )
    return [
        # --- nothing, noise and text ---------------------------------------------------
        Hostile("empty.jpg", b"", ("empty_file",)),
        Hostile("zeros.png", bytes(4096), ("not_an_image",)),
        Hostile("random.jpg", rng.randbytes(20_000), ("not_an_image", "unsupported_type")),
        Hostile("random-small.dcm", rng.randbytes(7), ("not_an_image", "unsupported_type")),
        Hostile("notes.jpg", b"Patient looks fine, see attached.\n" * 40, ("unsupported_type",)),
        Hostile("utf16.png", "radiograph".encode("utf-16"), ("not_an_image", "unsupported_type")),
        Hostile("padded.jpg", bytes(64) + good_jpeg, ("not_an_image",)),
        # --- wrong type behind a right extension -----------------------------------------
        Hostile("report.jpg", pdf, ("unsupported_type",)),
        Hostile("page.png", html, ("unsupported_type",)),
        Hostile("vector.svg", svg, ("unsupported_type",)),
        Hostile("xray.png", svg.replace(b'<?xml version="1.0"?>\n', b""), ("unsupported_type",)),
        Hostile("archive.dcm", _zip({"xray.jpg": good_jpeg}), ("unsupported_type",)),
        Hostile("compressed.jpg", gzip.compress(good_jpeg), ("unsupported_type",)),
        Hostile("program.jpg", b"\x7fELF\x02\x01\x01" + bytes(200), ("unsupported_type",)),
        Hostile("setup.png", b"MZ\x90\x00" + bytes(300), ("unsupported_type",)),
        Hostile("anim.jpg", b"GIF89a" + encode(Image.fromarray(gradient()), "GIF")[6:], ("unsupported_type",)),
        Hostile("photo.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(100), ("unsupported_type",)),
        Hostile("scan.jpg", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(100), ("unsupported_type",)),
        # --- polyglots -------------------------------------------------------------------
        Hostile("gifjs.gif", b"GIF89a/*\x00\x01\x00\x01\x00\x00\x00*/=alert(1)//;", ("unsupported_type",)),
        Hostile("jpeg-zip.jpg", good_jpeg + _zip({"payload.js": b"alert(1)"}), ("polyglot",)),
        Hostile("jpeg-script.jpg", _jpeg_with_comment(b"<script>alert(1)</script>"), ("polyglot",)),
        Hostile("jpeg-pdf.jpg", _jpeg_with_comment(b"%PDF-1.4 hidden"), ("polyglot",)),
        Hostile("jpeg-php.jpg", _jpeg_with_comment(b"<?php system($_GET['c']); ?>"), ("polyglot",)),
        Hostile("png-html.png", good_png + html, ("polyglot",)),
        Hostile("dicom-pe.dcm", _dicom_preamble(b"MZ\x90\x00This program cannot be run"), ("polyglot",)),
        # --- truncated and damaged -------------------------------------------------------
        Hostile("half.jpg", good_jpeg[: len(good_jpeg) // 2], TRUNCATED_OR_CORRUPT),
        Hostile("header-only.jpg", good_jpeg[:200], TRUNCATED_OR_CORRUPT),
        Hostile("soi.jpg", b"\xff\xd8\xff", TRUNCATED_OR_CORRUPT),
        Hostile("half.png", good_png[: len(good_png) // 2], TRUNCATED_OR_CORRUPT),
        Hostile("signature.png", good_png[:8], TRUNCATED_OR_CORRUPT),
        Hostile("bad-crc.png", good_png[:20] + bytes([good_png[20] ^ 0xFF]) + good_png[21:], TRUNCATED_OR_CORRUPT),
        Hostile("bad-idat.png", crafted_png(256, 256, rows=rng.randbytes(5000)), TRUNCATED_OR_CORRUPT),
        Hostile("half.webp", good_webp[: len(good_webp) // 2], TRUNCATED_OR_CORRUPT),
        Hostile("header.bmp", encode(Image.fromarray(gradient()), "BMP")[:60], TRUNCATED_OR_CORRUPT),
        Hostile("cut-with-eoi.jpg", jpeg_cut_with_eoi(0.6), ("truncated",)),
        Hostile("first-scan-only.jpg", progressive_first_scans(1), ("truncated",)),
        Hostile("nan.tiff", float_tiff(float("nan")), ("invalid_pixels",)),
        Hostile("twelve-bit.jpg", jpeg_with_precision(12), ("unsupported_type",)),
        Hostile(
            "text-bomb.png",
            crafted_png(64, 64, extra=_png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(bytes(8_000_000), 9))),
            ("corrupt_image",),
        ),
        # --- absurd dimensions and decompression bombs ----------------------------------
        Hostile("scan-bomb.jpg", scan_bomb(50), ("corrupt_image",)),
        Hostile("segment-bomb.jpg", jpeg()[:2] + b"\xff\xe1\x00\x02" * 20_000 + jpeg()[2:], ("corrupt_image",)),
        Hostile("chunk-bomb.png", png_with_chunks(b"abCd", 20_000), ("corrupt_image",)),
        Hostile("idat-bomb.png", png_with_chunks(b"IDAT", 20_000), ("corrupt_image",)),
        Hostile("bomb.png", crafted_png(16_000, 16_000, bit_depth=1), ("too_large_dimensions",)),
        Hostile("bomb-warning-zone.png", crafted_png(7_000, 7_000, bit_depth=1), ("too_large_dimensions",)),
        Hostile("absurd.png", crafted_png(100_000, 100_000, rows=b""), ("too_large_dimensions",)),
        Hostile("absurd.jpg", _jpeg_with_size(65_000, 65_000), ("too_large_dimensions",)),
        Hostile("wide.png", crafted_png(60_000, 100, rows=b""), ("too_large_dimensions",)),
        Hostile("tall.jpg", _jpeg_with_size(100, 60_000), ("too_large_dimensions",)),
        Hostile("absurd.bmp", _bmp_with_size(50_000, 50_000), ("too_large_dimensions",)),
        Hostile("absurd.tiff", _tiff_with_size(100_000, 100_000), ("too_large_dimensions",)),
        Hostile("zero-width.png", crafted_png(0, 64, rows=b""), ("corrupt_image",)),
        Hostile("one-pixel.png", png(np.zeros((1, 1), np.uint8)), ("too_small",)),
        Hostile("tiny.jpg", jpeg(gradient(16, 16)), ("too_small",)),
        # --- DICOM -----------------------------------------------------------------------
        Hostile("half.dcm", good_dicom[: len(good_dicom) // 2], ("corrupt_dicom",)),
        Hostile("garbage.dcm", bytes(128) + b"DICM" + rng.randbytes(3000), ("corrupt_dicom",)),
        Hostile("magic-only.dcm", bytes(128) + b"DICM", ("corrupt_dicom",)),
        Hostile("report.dcm", dicom(gradient(), with_pixels=False, modality="SR"), ("dicom_no_pixel_data",)),
        Hostile("absurd.dcm", _dicom_with_rows(65_535, 65_535), ("too_large_dimensions",)),
        Hostile("smuggled-jpeg.dcm", _dicom_smuggling_jpeg(3000, 3000), ("corrupt_dicom",)),
        Hostile("short-pixels.dcm", _dicom_with_rows(4_000, 4_000), ("corrupt_dicom",)),
        Hostile("tile-flood.dcm", dicom_j2k_tile_flood(), ("corrupt_dicom",)),
        Hostile("cut-jpeg-frame.dcm", dicom_with_cut_frame("jpeg"), ("corrupt_dicom",)),
        Hostile("cut-jpeg-ls-frame.dcm", dicom_with_cut_frame("jpeg-ls"), ("corrupt_dicom",)),
        Hostile("half-jpeg.dcm", dicom_jpeg(gradient())[:3000], ("corrupt_dicom",)),
        Hostile("bad-length.dcm", dicom_with_length(b"\x10\x00\x10\x00PN", 0x2000), ("corrupt_dicom",)),
        Hostile("bad-rows-length.dcm", dicom_with_length(b"\x28\x00\x10\x00US", 0x41), ("corrupt_dicom",)),
        Hostile("cut-with-eoi.dcm", dicom_holding_jpeg(jpeg_cut_with_eoi(0.6)), ("truncated",)),
        Hostile("first-scan-only.dcm", dicom_holding_jpeg(progressive_first_scans(1)), ("truncated",)),
        Hostile(
            "deflated.dcm", dicom(gradient(), transfer_syntax=DeflatedExplicitVRLittleEndian), ("unsupported_dicom",)
        ),
        # --- hostile names on hostile content ---------------------------------------------
        Hostile("../../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", ("unsupported_type",)),
        Hostile("..\\..\\windows\\system32\\evil.dcm", pdf, ("unsupported_type",)),
        Hostile("xray\x00.jpg.exe", b"MZ" + bytes(100), ("unsupported_type",)),
        Hostile("<img src=x onerror=alert(1)>.png", html, ("unsupported_type",)),
        Hostile("<script>alert(1)</script>.jpg", good_jpeg[:300], TRUNCATED_OR_CORRUPT),
        Hostile("\u202egpj.exe", b"", ("empty_file",)),
        Hostile("a" * 5000 + ".jpg", b"%PDF-1.7\n", ("unsupported_type",)),
    ]
