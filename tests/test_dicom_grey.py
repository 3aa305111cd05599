"""Grey levels of DICOM films with header values real exports get wrong: a window that cannot be
applied, padding pixels outside the anatomy, and values that are not numbers at all."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from tests.image_samples import dicom
from webapp.inference.decode import DecodeError, decode

# 12-bit film: a horizontal ramp over the whole stored range, so every grey level shows.
RAMP = np.tile(np.linspace(0, 4095, 256).astype(np.uint16), (256, 1))


def with_raw(data: bytes, **values) -> bytes:
    """The file with elements set to raw bytes, exactly as a modality wrote them."""
    ds = dcmread(io.BytesIO(data))
    for keyword, value in values.items():
        value += b" " * (len(value) % 2)  # even length, as DICOM pads text
        tag = Tag(keyword)
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "window",
    [
        {"WindowCenter": b"", "WindowWidth": b""},
        {"WindowCenter": b"2048", "WindowWidth": b"0"},
        {"WindowCenter": b"2048", "WindowWidth": b"-400"},
        {"WindowCenter": b"centre", "WindowWidth": b"wide"},
        {"WindowCenter": b"2048", "WindowWidth": b"0.5"},  # LINEAR needs at least 1
        {"WindowCenter": b"2048", "WindowWidth": b"400", "VOILUTFunction": b"CURVED"},
    ],
)
def test_an_unusable_window_is_ignored_as_viewers_do(window):
    plain = decode(dicom(RAMP, bits_stored=12, modality="CR")).pixels
    windowed = decode(with_raw(dicom(RAMP, bits_stored=12, modality="CR"), **window)).pixels
    np.testing.assert_allclose(windowed, plain, atol=1e-6)


def test_a_usable_window_still_applies():
    plain = decode(dicom(RAMP, bits_stored=12, modality="CR")).pixels
    windowed = decode(
        with_raw(dicom(RAMP, bits_stored=12, modality="CR"), WindowCenter=b"1000\\2000", WindowWidth=b"400\\800")
    ).pixels
    assert not np.allclose(windowed, plain)
    assert windowed.min() == pytest.approx(0.0) and windowed.max() == pytest.approx(1.0)


def padded(pixels: np.ndarray, rows: int, value: int, bits_stored: int, **padding) -> bytes:
    film = pixels.copy()
    film[:rows] = value
    ds = dcmread(io.BytesIO(dicom(film, bits_stored=bits_stored, modality="CR")))
    for keyword, padding_value in padding.items():
        ds.add_new(keyword, "US", padding_value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# The anatomy in 10 bits of 16 (or of 12): padding at the top of the range would set the grey range.
ANATOMY = np.tile(np.linspace(0, 1000, 256).astype(np.uint16), (256, 1))


@pytest.mark.parametrize(
    "bits_stored, value, padding",
    [
        (16, 0xFFFF, {"PixelPaddingValue": 0xFFFF}),
        (12, 0xFFFF, {"PixelPaddingValue": 0xFFFF}),  # pydicom cuts both pixels and padding to 12 bits
        (16, 0xFFF0, {"PixelPaddingValue": 0xFFFF, "PixelPaddingRangeLimit": 0xFF00}),
    ],
)
def test_padding_pixels_do_not_set_the_grey_range(bits_stored, value, padding):
    plain = decode(dicom(ANATOMY, bits_stored=bits_stored, modality="CR")).pixels
    image = decode(padded(ANATOMY, 20, value, bits_stored, **padding)).pixels
    np.testing.assert_allclose(image[20:], plain[20:], atol=1e-6)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_without_padding_declared_the_bright_rows_count():
    plain = decode(dicom(ANATOMY, bits_stored=16, modality="CR")).pixels
    image = decode(padded(ANATOMY, 20, 0xFFFF, 16)).pixels
    assert image[20:].mean() < plain[20:].mean() / 4  # what padding did before it was recognised


def float_film(pixels: np.ndarray, double: bool = False) -> bytes:
    ds = dcmread(io.BytesIO(dicom(np.zeros(pixels.shape, np.uint16), bits_stored=16, modality="CR")))
    del ds.PixelData
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation  # not used with float pixel data
    ds.BitsAllocated = 64 if double else 32
    data = pixels.astype(np.float64 if double else np.float32).tobytes()
    if double:
        ds.DoubleFloatPixelData = data
    else:
        ds.FloatPixelData = data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("double", [False, True])
def test_float_pixels_that_are_not_numbers_are_refused_clearly(bad, double):
    pixels = np.tile(np.linspace(0.0, 1.0, 256), (256, 1))
    assert decode(float_film(pixels, double)).pixels.shape == (256, 256)  # a sound float film decodes
    pixels[100, 100] = bad
    with pytest.raises(DecodeError) as raised:
        decode(float_film(pixels, double))
    assert raised.value.code == "corrupt_dicom" and "pixel values" in raised.value.message


@pytest.mark.parametrize("slope, intercept", [(b"NaN", b"0"), (b"1", b"inf"), (b"one", b"0"), (b"1e999", b"0")])
def test_a_rescale_that_is_not_a_number_is_refused_clearly(slope, intercept):
    data = with_raw(dicom(RAMP, bits_stored=12, modality="CR"), RescaleSlope=slope, RescaleIntercept=intercept)
    with pytest.raises(DecodeError) as raised:
        decode(data)
    assert raised.value.code == "corrupt_dicom" and "Rescale" in raised.value.message


def with_presentation(data: bytes, shape: str) -> bytes:
    ds = dcmread(io.BytesIO(data))
    ds.PresentationLUTShape = shape
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_inverse_presentation_lut_is_shown_inverted_once():
    """Viewers show MONOCHROME2 with Presentation LUT Shape INVERSE inverted; read upright, the film
    would reach the model as a negative. MONOCHROME1 declared INVERSE, as the DX IOD asks, is inverted
    once, not twice."""
    plain = decode(dicom(RAMP, bits_stored=12, modality="DX")).pixels
    identity = decode(with_presentation(dicom(RAMP, bits_stored=12, modality="DX"), "IDENTITY")).pixels
    inverse = decode(with_presentation(dicom(RAMP, bits_stored=12, modality="DX"), "INVERSE")).pixels
    np.testing.assert_allclose(identity, plain, atol=1e-6)
    np.testing.assert_allclose(inverse, 1.0 - plain, atol=1e-6)
    mono1 = dicom(4095 - RAMP, bits_stored=12, modality="DX", photometric="MONOCHROME1")
    np.testing.assert_allclose(decode(with_presentation(mono1, "INVERSE")).pixels, plain, atol=1e-6)
