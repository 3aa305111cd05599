"""Files whose structure alone makes them costly or wrong to decode, and refusals that must name the
real problem: scan and segment bombs, JPEGs cut short with an EOI appended, NaN pixels, 12-bit JPEG,
DICOM without its preamble, in a transfer syntax with no decoder, or carrying a document; and the
review copy decoded within the operator's DECODE_MEMORY_MB."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset

from tests.hostile_corpus import (
    _png_chunk,
    float_tiff,
    jpeg_cut_with_eoi,
    jpeg_parts,
    jpeg_with_precision,
    png_with_chunks,
    progressive_first_scans,
    progressive_jpeg,
    scan_bomb,
)
from tests.image_samples import dicom, dicom_jpeg, encode, gradient, jpeg, png
from webapp.inference import structure
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError
from webapp.screening import review_copy


def refusal(data: bytes, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, target_size=224, **kwargs)
    return caught.value


# --- scan and segment bombs ---------------------------------------------------------------


def test_a_repeated_progressive_scan_is_refused_before_decoding():
    error = refusal(scan_bomb(2000))
    assert error.code == "corrupt_image" and "progressive scan" in error.message


def test_more_scans_than_any_real_jpeg_are_refused_even_in_a_legal_order():
    # One grey component: a DC scan, 63 single-coefficient AC scans, then each refined once: 128
    # scans in T.81 order. Only the headers matter: the walk refuses before any decoder runs.
    head = b"".join(b for m, b in jpeg_parts(progressive_jpeg()) if m != 0xDA)

    def sos(first, last, high, low):
        return b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0, first, last, high << 4 | low)

    scans = [sos(0, 0, 0, 1)] + [sos(k, k, 0, 1) for k in range(1, 64)]
    scans += [sos(0, 0, 1, 0)] + [sos(k, k, 1, 0) for k in range(1, 64)]
    with pytest.raises(DecodeError) as caught:
        structure.check_jpeg(b"\xff\xd8" + head + b"".join(scans) + b"\xff\xd9")
    assert "more than 100 scans" in caught.value.message
    complete = [sos(k, k, 0, 0) for k in range(64)]  # 64 scans, every coefficient to its last bit
    structure.check_jpeg(b"\xff\xd8" + head + b"".join(complete) + b"\xff\xd9")


def test_a_jpeg_full_of_empty_segments_is_refused_cheaply():
    good = jpeg()
    error = refusal(good[:2] + b"\xff\xe1\x00\x02" * 1_000_000 + good[2:])
    assert error.code == "corrupt_image" and "segments" in error.message
    assert decode(good[:2] + b"\xff\xe1\x00\x02" * 500 + good[2:]).pixels.shape == (256, 256)


@pytest.mark.parametrize("kind", [b"abCd", b"IDAT"])
def test_a_png_split_into_a_million_empty_chunks_is_refused_cheaply(kind):
    error = refusal(png_with_chunks(kind, 1_000_000))
    assert error.code == "corrupt_image" and "chunks" in error.message


def test_a_png_in_8_kb_idat_chunks_as_libpng_writes_it_decodes():
    noise = np.random.default_rng(1).integers(0, 256, (512, 512), dtype=np.uint8)
    data = png(noise)
    pos, head, stream = 8, b"", b""
    while data[pos + 4 : pos + 8] != b"IEND":
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IDAT":
            stream += data[pos + 8 : pos + 8 + length]
        else:
            head += data[pos : pos + 12 + length]
        pos += 12 + length
    chunks = b"".join(_png_chunk(b"IDAT", stream[i : i + 8192]) for i in range(0, len(stream), 8192))
    rechunked = data[:8] + head + chunks + data[pos:]
    assert rechunked.count(b"IDAT") > 30
    assert np.array_equal(decode(rechunked).pixels, decode(data).pixels)


# --- truncated JPEGs that libjpeg decodes with a grey fill --------------------------------


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_a_baseline_jpeg_cut_short_with_an_eoi_appended_is_truncated(fraction):
    assert refusal(jpeg_cut_with_eoi(fraction)).code == "truncated"


@pytest.mark.parametrize("scans", [1, 2, 5])
def test_a_progressive_jpeg_missing_its_last_scans_is_truncated(scans):
    assert refusal(progressive_first_scans(scans)).code == "truncated"


def _cut_inside_last_scan(data: bytes) -> bytes:
    last_scan = data.rindex(b"\xff\xda")
    return data[: last_scan + (len(data) - last_scan) // 2] + b"\xff\xd9"


def test_a_progressive_jpeg_cut_inside_its_last_scan_is_truncated():
    # Every scan header is there; the blocks after the cut miss their last refinement.
    assert refusal(_cut_inside_last_scan(progressive_jpeg())).code == "truncated"


def test_a_baseline_film_is_spared_the_second_decode_unless_its_last_pixel_is_grey(monkeypatch):
    calls = []
    monkeypatch.setattr("webapp.inference.decode.check_entropy_data", lambda *args: calls.append(1))
    decode(jpeg())
    assert calls == []
    grey_corner = gradient()
    grey_corner[-16:, -16:] = 128
    decode(jpeg(grey_corner))
    assert calls == [1]


def test_complete_jpegs_still_decode_exactly_as_before():
    for data in (jpeg(), progressive_jpeg(), jpeg(np.stack([gradient()] * 3, -1))):
        pixels = decode(data).pixels
        assert np.array_equal(
            pixels, np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32) * np.float32(1 / 255)
        )


def test_a_12_bit_jpeg_is_named_as_such():
    error = refusal(jpeg_with_precision(12))
    assert error.code == "unsupported_type"
    assert "12-bit JPEG" in error.message and "PNG" in error.message


# --- non-finite pixels ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_tiff_with_non_finite_pixels_is_refused(value):
    error = refusal(float_tiff(value))
    assert error.code == "invalid_pixels" and "NaN" in error.message


def test_a_float_tiff_with_a_range_wider_than_float32_decodes_to_finite_pixels():
    pixels = gradient().astype(np.float32)
    pixels[0, 0], pixels[0, 1] = -3e38, 3e38
    image = decode(encode(Image.fromarray(pixels), "TIFF"))
    assert np.isfinite(image.pixels).all() and image.pixels.min() >= 0 and image.pixels.max() <= 1


# --- DICOM refusals that name the real problem ----------------------------------------------


def _dicom_12() -> bytes:
    return dicom(gradient(levels=4096), bits_stored=12)


@pytest.mark.parametrize("cut", [128, 132], ids=["starts-at-DICM", "starts-at-meta"])
def test_a_dicom_without_its_preamble_is_read_as_the_dicom_it_is(cut):
    whole = _dicom_12()
    assert np.array_equal(decode(whole[cut:]).pixels, decode(whole).pixels)


def test_a_bare_dicom_data_set_is_named_not_called_unrecognised():
    ds = pydicom.dcmread(io.BytesIO(_dicom_12()))
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert buffer.getvalue()[:2] == b"\x08\x00"
    for data in (buffer.getvalue(), bytes(128) + b"DICM" + buffer.getvalue()):
        error = refusal(data)
        assert error.code == "unsupported_dicom" and "without its file header" in error.message


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.3.4.5.6"])
def test_a_dicom_in_a_transfer_syntax_without_decoder_says_so(syntax):
    ds = pydicom.dcmread(io.BytesIO(dicom_jpeg(gradient())))
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer)
    error = refusal(buffer.getvalue())
    assert error.code == "unsupported_dicom" and "uncompressed" in error.message


def test_an_encapsulated_pdf_dicom_has_no_image_and_is_no_polyglot():
    ds = pydicom.dcmread(io.BytesIO(dicom(gradient(), with_pixels=False, modality="DOC")))
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert refusal(buffer.getvalue()).code == "dicom_no_pixel_data"


def test_markup_in_a_dicom_text_element_does_not_make_a_polyglot():
    ds = pydicom.dcmread(io.BytesIO(_dicom_12()))
    ds.add_new(0x00091010, "LO", "Owner")
    ds.add_new(0x00091011, "LT", "<html> report</html>")
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert decode(buffer.getvalue()).pixels.shape == (256, 256)


def test_a_dicom_preamble_carrying_a_program_is_still_a_polyglot():
    assert refusal(b"MZ\x90\x00".ljust(128, b"\x00") + _dicom_12()[128:]).code == "polyglot"


# --- the review copy decodes within the operator's budget -----------------------------------


@pytest.mark.app_config(DECODE_MEMORY_MB=7)
def test_the_review_copy_decodes_within_the_configured_budget(app, monkeypatch):
    seen = []

    def fake_decode(data, **kwargs):
        seen.append(kwargs.get("memory_mb"))
        raise DecodeError("too_large_to_decode", "over budget")

    monkeypatch.setattr(review_copy, "decode", fake_decode)
    film = decode(jpeg(gradient(1024, 1024)), target_size=224)
    with app.app_context():
        review_copy.at_upload(b"", film, 1024, background=False, memory_mb=app.config["DECODE_MEMORY_MB"])
    with pytest.raises(DecodeError):
        review_copy._upgrade(app, 1, b"", 1024)
    assert seen == [7, 7]
