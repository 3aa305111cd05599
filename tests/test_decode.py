"""decode(): every accepted format to the same float image, every refusal with its code.

All inputs are built here with Pillow and pydicom (see tests/image_samples.py and
tests/hostile_corpus.py); none is a committed binary.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from functools import cache

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from pydicom.uid import JPEG2000Lossless, RLELossless

from tests.hostile_corpus import hostile_corpus
from tests.image_samples import PATIENT, dicom, dicom_jpeg, encode, gradient, jpeg, png, valid_samples
from webapp.inference import dicom as dicom_module
from webapp.inference.decode import decode
from webapp.inference.image import MAX_PIXELS, DecodedImage, DecodeError

REFERENCE = gradient().astype(np.float32) / 255  # what every 8-bit sample holds
REFERENCE_12 = gradient(levels=4096).astype(np.float32) / 4095
LOSSY = {"gray.jpg", "rgb.jpg", "cmyk.jpg", "progressive.jpg", "jpeg.dcm"}
ALPHA = {"rgba.png", "la.png"}  # alpha 200/255 over white: brighter than the reference
EXPECTED_FORMAT = {"jpg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP", "dcm": "DICOM"}


@cache
def samples() -> dict[str, bytes]:
    return valid_samples()


@cache
def corpus():
    return hostile_corpus()


def refusal(data: bytes, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, **kwargs)
    return caught.value


# --- accepted formats ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(valid_samples()))
def test_every_accepted_format_decodes_to_the_same_grey_image(name):
    image = decode(samples()[name])
    assert isinstance(image, DecodedImage)
    assert image.format == EXPECTED_FORMAT[name.rsplit(".", 1)[1]]
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (256, 256)
    assert (image.width, image.height) == (256, 256)
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    assert image.unknown_reason is None
    assert image.colourfulness < 0.01
    if name == "bilevel.png":
        assert set(np.unique(image.pixels)) == {0.0, 1.0}
        return
    reference = REFERENCE_12 if "16" in name or name in ("mono2.dcm", "mono1.dcm", "rle.dcm") else REFERENCE
    if "16" in name:
        reference = gradient(levels=65536).astype(np.float32) / 65535
    if name in ALPHA:
        reference = reference * (200 / 255) + (55 / 255)
    tolerance = 0.03 if name in LOSSY else (0.02 if name in ALPHA else 1e-3)
    assert np.abs(image.pixels - reference).mean() < tolerance


def test_a_16_bit_png_of_an_8_bit_film_equals_the_8_bit_reading():
    eight = gradient()
    sixteen = decode(png(eight.astype(np.uint16) * 257)).pixels
    np.testing.assert_allclose(sixteen, decode(png(eight)).pixels, atol=1e-6)


def test_12_bit_data_in_16_bit_words_is_scaled_by_12_bits_not_rendered_dark():
    image = decode(png(gradient(levels=4096).astype(np.uint16)))
    assert image.pixels.max() == pytest.approx(gradient(levels=4096).max() / 4095)
    tiff = decode(encode(Image.fromarray(gradient(levels=4096).astype(np.uint16)), "TIFF"))
    np.testing.assert_allclose(tiff.pixels, image.pixels, atol=1e-6)


def test_transparent_areas_become_white_and_half_transparent_black_mid_grey():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, 32:, 3] = 128  # right half: black at 50 % opacity; left half fully transparent
    pixels = decode(png(rgba)).pixels
    assert pixels[:, :32].min() == 1.0
    assert pixels[:, 32:].mean() == pytest.approx(127 / 255, abs=0.01)


def test_palette_with_transparency_is_flattened_too():
    image = Image.fromarray(gradient(64, 64)).convert("P")
    image.info["transparency"] = 0
    pixels = decode(encode(image, "PNG", transparency=0)).pixels
    assert pixels.max() == 1.0


def test_exif_orientation_is_applied_and_reported_as_displayed():
    stored = np.zeros((64, 128), np.uint8)
    stored[:, :16] = 255  # a bright band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = decode(jpeg(stored, exif=exif.tobytes()))
    assert image.pixels.shape == (128, 64) and (image.width, image.height) == (64, 128)
    assert image.pixels[:16].mean() > 0.9 and image.pixels[32:].mean() < 0.1  # band now on top


def test_a_broken_exif_block_does_not_cost_a_readable_image():
    data = jpeg(exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert decode(data).pixels.shape == (256, 256)


def test_colour_is_measured_and_grey_is_not():
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    assert decode(png(red)).colourfulness == pytest.approx(1.0)
    assert decode(png(gradient())).colourfulness == 0.0
    assert decode(encode(Image.fromarray(gradient()).convert("RGB"), "JPEG")).colourfulness < 0.01


def test_cmyk_is_converted_to_the_grey_it_shows():
    cmyk = decode(samples()["cmyk.jpg"])
    assert np.abs(cmyk.pixels - decode(samples()["gray.jpg"]).pixels).mean() < 0.02


def test_first_tiff_page_is_used():
    dark, bright = Image.fromarray(gradient() // 4), Image.new("L", (256, 256), 255)
    buffer = io.BytesIO()
    dark.save(buffer, "TIFF", save_all=True, append_images=[bright])
    assert decode(buffer.getvalue()).pixels.max() < 0.3


def test_large_jpeg_is_draft_decoded_but_never_below_the_target_size():
    big = jpeg(np.tile(gradient(), (12, 8)))  # 2048 wide, 3072 high
    image = decode(big, target_size=224)
    assert (image.width, image.height) == (2048, 3072)
    assert min(image.pixels.shape) >= 224 and image.pixels.shape == (384, 256)
    assert decode(big).pixels.shape == (3072, 2048)


def test_large_png_is_box_reduced_but_never_below_the_target_size():
    image = decode(png(np.tile(gradient(), (5, 5))), target_size=224)  # 1280 x 1280
    assert image.pixels.shape == (256, 256) and image.width == 1280


def test_the_extension_is_irrelevant_the_bytes_decide():
    # decode() is never told the file name: a PNG is a PNG whatever it was called.
    assert decode(samples()["gray.png"]).format == "PNG"


# --- input-level UNKNOWN reasons -------------------------------------------------------


def test_extreme_aspect_ratio_is_decoded_not_refused():
    # Proportions are judged once, by the model card's limits in decide(); decode keeps the image.
    image = decode(png(np.tile(gradient(), (1, 4))[:200]))  # 1024 x 200
    assert (image.width, image.height) == (1024, 200) and image.unknown_reason is None


def test_a_thumbnail_is_flagged_as_too_small_to_assess():
    assert "too small" in decode(png(gradient(100, 100))).unknown_reason


def test_a_blank_image_is_flagged():
    assert "blank" in decode(png(np.full((256, 256), 90, np.uint8))).unknown_reason


# --- guards and refusals ---------------------------------------------------------------


def test_pillow_guards_are_set_deliberately():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


def test_the_bomb_warning_zone_is_refused_even_when_warnings_are_ignored():
    bomb = next(h for h in corpus() if h.filename == "bomb-warning-zone.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert refusal(bomb.data).code == "too_large_dimensions"


@pytest.mark.parametrize("hostile", corpus(), ids=lambda h: h.name[:60])
def test_every_hostile_file_is_refused_with_its_code(hostile):
    error = refusal(hostile.data, target_size=224)
    assert error.code in hostile.codes
    assert error.message and error.message == str(error)
    assert "Traceback" not in error.message and "Error" not in error.message


def test_the_corpus_is_big_and_varied_enough():
    codes = {code for h in corpus() for code in h.codes}
    assert len(corpus()) >= 40
    assert codes >= {
        "empty_file",
        "unsupported_type",
        "not_an_image",
        "polyglot",
        "truncated",
        "corrupt_image",
        "too_large_dimensions",
        "too_small",
        "corrupt_dicom",
        "dicom_no_pixel_data",
        "unsupported_dicom",
    }


def _mutations():
    seeds = list(samples().values())
    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=0, max_size=8)), max_size=6),
        st.integers(1, 1 << 20),
    )


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_mutations())
def test_damaged_valid_files_either_decode_or_raise_decode_error(case):
    """A quick in-suite cousin of the atheris fuzz target (tests/fuzz_decode.py)."""
    seed, edits, cut = case
    data = bytearray(seed)
    for offset, patch in edits:
        at = offset % max(len(data), 1)
        data[at : at + len(patch)] = patch
    try:
        image = decode(bytes(data[: max(cut, len(data) // 2)]), target_size=224)
    except DecodeError:
        return
    assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
    assert np.isfinite(image.pixels).all()
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0


@given(st.binary(max_size=2048))
@settings(max_examples=150, deadline=None, database=None)
def test_arbitrary_bytes_never_raise_anything_but_decode_error(data):
    with contextlib.suppress(DecodeError):
        decode(data)


# --- DICOM -----------------------------------------------------------------------------


def test_monochrome1_is_inverted_after_the_voi_step():
    stored = gradient(levels=4096)
    mono2 = decode(dicom(stored, bits_stored=12, window=(2048, 4096))).pixels
    mono1 = decode(dicom(4095 - stored, bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1")).pixels
    np.testing.assert_allclose(mono1, mono2, atol=1e-3)


def test_rescale_is_applied_before_the_window():
    stored = gradient(levels=4096)
    # Output units = 2 * stored - 1000; the window covers output values 0..2000.
    image = decode(dicom(stored, bits_stored=12, slope=2, intercept=-1000, window=(1000, 2000)))
    expected = np.clip((2.0 * stored - 1000) / 2000, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=2e-3)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0  # clipped by the window


def test_a_voi_lut_sequence_takes_precedence_and_sets_the_range():
    stored = gradient(levels=1024)
    lut = (np.sqrt(np.arange(1024) / 1023) * 4095).astype(np.uint16)  # gamma, 12-bit output
    image = decode(dicom(stored, bits_stored=10, voi_lut=lut, window=(10, 2)))
    np.testing.assert_allclose(image.pixels, lut[stored] / 4095, atol=1e-3)


def test_window_with_monochrome1_and_signed_rescaled_data():
    stored = gradient(levels=4096).astype(np.int16) - 2048
    image = decode(
        dicom(stored, bits_stored=12, signed=True, slope=1, intercept=0, window=(0, 4096), photometric="MONOCHROME1")
    )
    expected = 1 - np.clip((stored + 2048) / 4095, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=2e-3)


def test_no_window_scales_by_the_bits_the_data_use():
    stored = gradient(levels=4096)  # 12-bit data declared as 16 bits stored
    image = decode(dicom(stored, bits_stored=16))
    np.testing.assert_allclose(image.pixels, stored / 4095, atol=1e-4)


def test_float_pixel_data_is_scaled_by_its_own_range():
    ds = pydicom.dcmread(io.BytesIO(dicom(gradient())))
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = gradient().astype(np.float32) / 255 * 100 - 20
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(decode(buffer.getvalue()).pixels, expected, atol=1e-5)


def test_multi_frame_gives_the_first_frame():
    frames = np.stack([gradient(), 255 - gradient(), np.zeros((256, 256), np.uint8)])
    image = decode(dicom(frames))
    np.testing.assert_allclose(image.pixels, REFERENCE, atol=1e-6)
    assert image.facts["NumberOfFrames"].startswith("3")


@pytest.mark.parametrize(
    "modality, words", [("CT", "CT slice"), ("MR", "MR image"), ("US", "ultrasound"), ("MG", "mammogram")]
)
def test_non_radiograph_modalities_decode_but_are_flagged(modality, words):
    image = decode(dicom(gradient(), modality=modality))
    assert words in image.unknown_reason and modality in image.unknown_reason


@pytest.mark.parametrize("modality", ["CR", "DX", ""])
def test_radiograph_modalities_are_not_flagged(modality):
    assert decode(dicom(gradient(), modality=modality)).unknown_reason is None


@pytest.mark.parametrize(
    "extra, words", [({"ViewPosition": "LL"}, "lateral"), ({"BodyPartExamined": "KNEE"}, "of the knee")]
)
def test_lateral_views_and_other_body_parts_are_flagged(extra, words):
    assert words in decode(dicom(gradient(), extra=extra)).unknown_reason


def test_raw_detector_images_are_flagged():
    # A DX "For Processing" image is the detector's raw data, before the vendor's processing makes a
    # film of it: not what the model was trained on, nor what a radiologist reads.
    reason = decode(dicom(gradient(), extra={"PresentationIntentType": "FOR PROCESSING"})).unknown_reason
    assert "For Processing" in reason and "For Presentation" in reason


@pytest.mark.parametrize("intent", ["FOR PRESENTATION", ""])
def test_presentation_images_are_not_flagged(intent):
    assert decode(dicom(gradient(), extra={"PresentationIntentType": intent})).unknown_reason is None


@pytest.mark.parametrize("body_part", ["CHEST", "PORT CHEST", "THORAX"])
def test_chest_body_parts_are_not_flagged(body_part):
    assert decode(dicom(gradient(), extra={"BodyPartExamined": body_part})).unknown_reason is None


def test_compressed_transfer_syntaxes():
    jpeg_baseline = decode(dicom_jpeg(gradient()))
    assert np.abs(jpeg_baseline.pixels - REFERENCE).mean() < 0.01
    rle = decode(dicom(gradient(levels=4096), bits_stored=12, transfer_syntax=RLELossless))
    np.testing.assert_allclose(rle.pixels, REFERENCE_12, atol=1e-6)
    j2k = decode(dicom(gradient(levels=4096), bits_stored=12, transfer_syntax=JPEG2000Lossless))
    np.testing.assert_allclose(j2k.pixels, REFERENCE_12, atol=1e-6)
    assert j2k.facts["TransferSyntax"] == "JPEG 2000 Image Compression (Lossless Only)"


def test_colour_dicom_is_converted_and_its_colour_measured():
    rgb = np.zeros((128, 128, 3), np.uint8)
    rgb[..., 1] = 200
    image = decode(dicom(rgb, modality="XC"))
    assert image.colourfulness > 0.7 and image.pixels.shape == (128, 128)


def test_identifying_fields_are_never_read(monkeypatch):
    read = []

    def spy(*args, **kwargs):
        ds = pydicom.filereader.read_partial(*args, **kwargs)
        read.append(ds)
        return ds

    monkeypatch.setattr(dicom_module, "read_partial", spy)
    image = decode(dicom(gradient(), extra={"OperatorsName": "Secret^Operator"}))
    (ds,) = read
    # The birth date is read only to compute an age (tests/test_age.py); it is never kept.
    for keyword in [*PATIENT, "OperatorsName"]:
        assert keyword not in ds or keyword == "PatientBirthDate"
    assert set(image.facts) <= {
        "Modality",
        "ViewPosition",
        "BodyPartExamined",
        "PhotometricInterpretation",
        "BitsStored",
        "TransferSyntax",
        "NumberOfFrames",
    }
    shown = repr(image.facts) + repr(image.unknown_reason)
    for secret in [*PATIENT.values(), "Secret^Operator"]:
        assert secret not in shown
    assert image.facts["Modality"] == "DX" and image.facts["ViewPosition"] == "PA"


def test_dicom_refusal_messages_carry_no_patient_data():
    damaged = dicom(gradient())
    for data in (damaged[: len(damaged) - 100], damaged[:400]):
        error = refusal(data)
        # Cut between two elements before the pixels, a file looks like one with no image.
        assert error.code in ("corrupt_dicom", "dicom_no_pixel_data")
        assert not any(secret in error.message for secret in PATIENT.values())
