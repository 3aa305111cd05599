"""The memory budget per decode: each decoder's peak for the image, checked from the header
(tests/test_decode_memory.py measures the peaks against it)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from tests.helpers import issue_token
from tests.image_samples import dicom, encode, float_film, gradient, jpeg, png
from webapp.extensions import db
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError
from webapp.models import Prediction


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def blank_rgba_png(side: int = 6000) -> bytes:
    """A valid, fully transparent side x side RGBA PNG: ~140 KB on disk, 4 bytes a pixel decoded."""
    compressor, row = zlib.compressobj(9), b"\x00" + bytes(side * 4)
    parts = [compressor.compress(row) for _ in range(side)] + [compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def rgba_bomb() -> bytes:
    return blank_rgba_png()


def refusal(data: bytes, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, target_size=224, **kwargs)
    return caught.value


def test_a_140_kb_6000x6000_rgba_png_is_refused_from_its_header(rgba_bomb):
    assert len(rgba_bomb) < 200_000
    error = refusal(rgba_bomb, memory_mb=100)
    assert error.code == "too_large_to_decode"
    # 6000*6000*4 bytes as Pillow stores it, and one band of the alpha flattening (78 rows x 24 bytes)
    assert "6000x6000" in error.message and "231 MB" in error.message


def test_channels_and_sample_width_count():
    rgb = np.stack([gradient(1000, 1000)] * 3, axis=-1)
    assert refusal(png(rgb), memory_mb=4).code == "too_large_to_decode"  # 3.8 MB stored (4 bytes), 4.2 at the peak
    assert decode(png(rgb), target_size=224, memory_mb=5).width == 1000
    gray16 = gradient(1000, 1000, levels=4096)
    # 1.9 MB stored at 16 bits, and the image (one band) as an array and in float32: 15.3 MB
    assert refusal(png(gray16), memory_mb=15).code == "too_large_to_decode"
    assert decode(png(gray16), target_size=224, memory_mb=16).format == "PNG"
    assert decode(png(gradient(1000, 1000)), target_size=224, memory_mb=2).format == "PNG"  # 8-bit gray: 1.3 MB


def test_a_need_just_over_the_budget_is_not_shown_as_the_budget():
    """An 8-bit 1100 x 1000 PNG needs 1.05 MB: rounded to nearest, the refusal said it would need 1 MB
    and that the server decodes at most 1 MB."""
    with pytest.raises(DecodeError) as refused:
        decode(png(gradient(1100, 1000)), target_size=224, memory_mb=1)
    assert "would need 2 MB of memory; this server decodes at most 1 MB" in refused.value.message


def test_jpeg_counts_what_dct_scaling_leaves():
    # 2000x2000 RGB is 11.4 MB at full size; decoded at 1/8 scale for a 224 model it is 0.2 MB.
    big = jpeg(np.stack([gradient(2000, 2000)] * 3, axis=-1))
    assert decode(big, target_size=224, memory_mb=1).width == 2000
    with pytest.raises(DecodeError):
        decode(big, target_size=None, memory_mb=1)  # no model size: decoded at full size


def test_dicom_counts_samples_and_bits_allocated():
    data = dicom(gradient(1000, 1000, levels=4096))  # 16 bits allocated: 11 bytes a pixel and 4 of slack
    assert refusal(data, memory_mb=14).code == "too_large_to_decode"
    assert decode(data, target_size=224, memory_mb=15).format == "DICOM"


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_a_16_bit_dicom_decodes_in_few_full_size_copies(photometric):
    """A 16-bit film's decode made a float32 copy per step (grey levels, inversion, clip, cast) while
    the file's own copy of the pixels stayed alive: 16 bytes of Python-side memory a pixel, 305 MB
    for an ordinary 4300 x 4300 detector film. Now the steps run in place: 2 bytes (the frame) and 4
    (its grey levels), and the header's copy briefly."""
    side = 2000
    data = dicom(gradient(side, side, levels=4096), photometric=photometric, bits_stored=12)
    decode(data, target_size=224)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        decode(data, target_size=224)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / side**2 < 9


@pytest.mark.app_config(DECODE_MEMORY_MB=100)
def test_api_answers_413_and_writes_nothing(app, client, clinician_user, rgba_bomb):
    token = issue_token(app, "clin")
    response = client.post(
        "/api/v1/predictions",
        headers={"Authorization": f"Bearer {token}"},
        data={"file": (io.BytesIO(rgba_bomb), "big.png")},
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large_to_decode"
    with app.app_context():
        assert db.session.query(Prediction).count() == 0


@pytest.mark.app_config(DECODE_MEMORY_MB=1)
def test_budget_comes_from_the_config(app, client, clinician_user):
    token = issue_token(app, "clin")
    rgb = png(np.stack([gradient(1000, 1000)] * 3, axis=-1))
    response = client.post(
        "/api/v1/predictions", headers={"Authorization": f"Bearer {token}"}, data={"file": (io.BytesIO(rgb), "rgb.png")}
    )
    assert response.status_code == 413 and "at most 1 MB" in response.json["error"]["message"]


@pytest.mark.parametrize(("double", "need"), [(False, 20), (True, 31)])
def test_a_float_dicom_just_over_the_budget_is_refused_before_its_pixels_are_read(double, need):
    """Float Pixel Data (4-byte samples) and Double Float Pixel Data (8-byte) count 16 and 28 bytes a
    pixel plus 4 of allocator slack: a 1000 x 1000 film needs 20 and 31 MB. One MB less and it is refused
    from the header, without a single copy of its pixels (3.8 or 7.6 MB) being made."""
    y, x = np.ogrid[:1000, :1000]
    data = float_film((x + 3.0 * y) % 256 * 3.5 - 100, double=double, RescaleSlope=2.5, RescaleIntercept=-10)
    tracemalloc.start()
    try:
        error = refusal(data, memory_mb=need - 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.code == "too_large_to_decode" and f"need {need} MB" in error.message
    assert peak < 1_000_000
    assert decode(data, target_size=224, memory_mb=need).width == 1000


def test_a_jpeg_2000_film_counts_the_tiles_openjpeg_sets_up():
    """openjpeg sets up about 9.5 KB for every tile a JPEG 2000 frame's header declares: a 512 x 512 film
    in 4,096 tiles of 8 px was counted 4 MB, as if in one tile, and took 40 MB more than that."""
    film = gradient(512, 512)
    ds = dcmread(io.BytesIO(dicom(film)))
    codestream = encode(Image.fromarray(film), "JPEG2000", no_jp2=True, tile_size=(8, 8))
    ds.PixelData = encapsulate([codestream + b"\x00" * (len(codestream) % 2)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer)
    error = refusal(buffer.getvalue(), memory_mb=32)
    assert error.code == "too_large_to_decode" and "would need 44 MB" in error.message
    assert decode(buffer.getvalue(), target_size=None, memory_mb=44).pixels.shape == (512, 512)


def deflate_bomb(inflated_mb: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose data set, one OB element of zeros, inflates to
    `inflated_mb` MB from about 1 KB a MB."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_file_meta_info(header, meta, enforce_standard=True)
    element = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<L", inflated_mb << 20)  # a private OB element
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as the transfer syntax has it
    body = deflater.compress(element) + b"".join(deflater.compress(bytes(1 << 20)) for _ in range(inflated_mb))
    return bytes(128) + b"DICM" + header.getvalue() + body + deflater.flush()


def test_a_deflated_dicom_is_refused_before_it_is_inflated():
    """pydicom inflates a deflated data set whole as it reads it, and the refusal came after the read:
    a 500 KB upload inflated to 1 GB in 4.6 s first (and 50 MB, the upload limit, to 50 GB)."""
    bomb = deflate_bomb(100)
    assert len(bomb) < 150_000
    tracemalloc.start()
    try:
        error = refusal(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.code == "unsupported_dicom" and "Deflated" in error.message
    assert peak < 10 * 2**20


def with_sequence(tag: int, item: bytes, count: int, defined_length: bool) -> bytes:
    """A 12-bit film with a sequence of `count` copies of one encoded item inserted before its pixels."""
    film = dicom(gradient(levels=4096), bits_stored=12)
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ\x00\x00"
    if defined_length:
        sequence = header + struct.pack("<L", len(item) * count) + item * count
    else:
        sequence = header + b"\xff\xff\xff\xff" + item * count + b"\xfe\xff\xdd\xe0" + bytes(4)
    at = film.index(b"\xe0\x7f\x10\x00")  # Pixel Data: the sequences' tags sort before it
    return film[:at] + sequence + film[at:]


def test_a_header_of_a_hundred_thousand_sequence_items_is_refused_while_it_is_read():
    """pydicom parses every item of an undefined-length sequence into Python objects, even of one the
    decoder never asks for (Mask Subtraction Sequence here): 200,000 empty items, a 1.7 MB upload, took 9 s
    and 140 MB, counted under 1 MB; the 50 MB upload limit allows 30 times that."""
    bomb = with_sequence(0x00286100, b"\xfe\xff\x00\xe0" + bytes(4), 100_000, defined_length=False)
    error = refusal(bomb)
    assert error.code == "corrupt_dicom" and "far more elements" in error.message


def test_a_lut_sequence_of_thousands_of_items_is_refused_before_it_is_parsed():
    """A defined-length VOI LUT Sequence is parsed whole when first used (100,000 items: 4.8 s); only its
    first item is ever applied, and a film has a few (presets)."""
    lut = struct.pack("<HH", 0x0028, 0x3002) + b"US" + struct.pack("<HHHH", 6, 2, 0, 16)  # LUT Descriptor
    lut += struct.pack("<HH", 0x0028, 0x3006) + b"US" + struct.pack("<HHH", 4, 0, 4095)  # LUT Data
    item = b"\xfe\xff\x00\xe0" + struct.pack("<L", len(lut)) + lut
    assert decode(with_sequence(0x00283010, item, 3, defined_length=True), target_size=224).format == "DICOM"
    error = refusal(with_sequence(0x00283010, item, 1000, defined_length=True))
    assert error.code == "corrupt_dicom" and "far more elements" in error.message
