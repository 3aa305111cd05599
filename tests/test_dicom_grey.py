"""Grey levels of DICOM films with header values real exports get wrong: a window that cannot be
applied, padding pixels outside the anatomy, and values that are not numbers at all."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.tag import Tag
from pydicom.uid import JPEGBaseline8Bit

from tests.image_samples import dicom, encode, float_film
from webapp.inference import dicom_grey
from webapp.inference.decode import DecodeError, decode
from webapp.inference.image import scale_to_unit

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


@pytest.mark.parametrize(
    "frame",
    [
        np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 4096, (96, 128, 3), dtype=np.uint16),
        np.random.default_rng(3).integers(-2000, 2000, (96, 128, 3), dtype=np.int16),
        np.random.default_rng(4).uniform(-5, 40, (96, 128, 3)).astype(np.float32),
        np.full((96, 128, 3), 77, dtype=np.uint8),
    ],
)
def test_colour_to_grey_matches_the_whole_frame_in_float(frame):
    """The channel-at-a-time conversion gives what scaling the whole frame to float would."""
    rgb = scale_to_unit(frame)
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    step = max(1, min(frame.shape[:2]) // 64)
    sample = rgb[::step, ::step]
    grey, colourfulness = dicom_grey.grey_from_colour(frame)
    np.testing.assert_allclose(grey, expected, atol=1e-5)
    assert colourfulness == pytest.approx(float((sample.max(axis=-1) - sample.min(axis=-1)).mean()), abs=1e-5)


def test_colour_to_grey_holds_at_most_the_grey_and_one_channel_in_float():
    """A colour capture of 12 megapixels was converted through a float32 copy of all three channels
    (840 MB peak measured for a 5700 x 5700 JPEG DICOM); now at most 8 bytes a pixel more than the
    stored samples, and some slack for the subsample."""
    frame = np.random.default_rng(5).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    tracemalloc.start()
    dicom_grey.grey_from_colour(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= 8.5 * frame.shape[0] * frame.shape[1]


def test_a_ybr_film_reads_as_the_rgb_film_it_encodes():
    """YBR_FULL is read as the decoder gives it, its Y taken as the grey (only a small sample goes
    to RGB, for the colour measure): the same film as RGB and as YBR reads the same."""
    rng = np.random.default_rng(6)
    grey_film = np.tile(np.linspace(20, 230, 256).astype(np.uint8), (256, 1))
    tinted = np.stack([grey_film, grey_film, grey_film], axis=-1)
    tinted[64:128, 64:128] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # a coloured patch
    for pixels in (np.stack([grey_film] * 3, axis=-1), tinted):
        as_rgb = decode(dicom(pixels, photometric="RGB", modality="OT"))
        ds = dcmread(io.BytesIO(dicom(convert_color_space(pixels, "RGB", "YBR_FULL"), modality="OT")))
        ds.PhotometricInterpretation = "YBR_FULL"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        as_ybr = decode(buffer.getvalue())
        np.testing.assert_allclose(as_ybr.pixels, as_rgb.pixels, atol=1.5 / 255)
        assert as_ybr.colourfulness == pytest.approx(as_rgb.colourfulness, abs=0.01)


def colour_jpeg_dicom(side: int) -> bytes:
    """A JPEG Baseline capture in YBR_FULL_422, as a colour secondary capture is exported."""
    ramp = np.tile(np.linspace(0, 255, side).astype(np.uint8), (side, 1))
    jpeg_bytes = encode(Image.fromarray(np.stack([ramp, ramp.T, ramp[::-1]], axis=-1)), "JPEG", quality=80)
    ds = dcmread(io.BytesIO(dicom(np.zeros((8, 8, 3), np.uint8), modality="OT")))
    ds.Rows = ds.Columns = side
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate([jpeg_bytes])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_colour_jpeg_capture_is_not_converted_whole_to_rgb():
    """pydicom's YBR -> RGB conversion of the whole frame was the decode's peak (868 MB and 11 s for a
    5700 x 5700 capture in the review; 495 MB now): Y is the grey, and only a sample goes to RGB."""
    data = colour_jpeg_dicom(1200)
    tracemalloc.start()
    image = decode(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert image.colourfulness > 0.2
    # 27 bytes a pixel at peak through the whole-frame conversion, 15 without it
    assert peak <= 18 * 1200 * 1200


def twelve_bit(pixels: np.ndarray, signed: bool, high_bit_15: bool = False) -> bytes:
    """A 12-bit CR film; with `high_bit_15`, stored as older CR readers do: in the top 12 of the 16
    bits (High Bit 15), with an overlay's bits set in the 4 below."""
    data = dicom(pixels.astype(np.int16 if signed else np.uint16), bits_stored=12, modality="CR", signed=signed)
    if not high_bit_15:
        return data
    ds = dcmread(io.BytesIO(data))
    ds.HighBit = 15
    ds.PixelData = ((pixels.astype(np.int32) << 4 | 0xF) & 0xFFFF).astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("signed", [False, True])
def test_stored_bits_above_bit_zero_read_as_the_film(signed):
    # Found by the PACS review: a CR with Bits Stored 12 and High Bit 15 came out as stripes (pydicom
    # keeps the low 12 bits) and the model answered UNKNOWN, where dcmtk's viewer showed the chest.
    pixels = RAMP.astype(np.int32) - (2048 if signed else 0)
    expected = decode(twelve_bit(pixels, signed)).pixels
    np.testing.assert_array_equal(decode(twelve_bit(pixels, signed, high_bit_15=True)).pixels, expected)


@pytest.mark.parametrize(
    "values, extra",
    [
        ("noise", {}),
        ("noise", {"RescaleSlope": 2.5, "RescaleIntercept": -10}),
        ("noise", {"RescaleSlope": -0.001, "RescaleIntercept": 7}),
        ("constant", {}),  # no range: scaled by the image's extremes
        ("noise", {"WindowCenter": 40, "WindowWidth": 700}),
        ("noise", {"WindowCenter": 40, "WindowWidth": 700, "VOILUTFunction": "SIGMOID", "RescaleSlope": 2}),
        ("wide int32", {}),
        ("wide int32", {"RescaleSlope": 0.5, "RescaleIntercept": 3}),
    ],
)
def test_the_chain_in_bands_gives_the_whole_image_pixels(values, extra, monkeypatch):
    """Float data (and 32-bit values too spread for a table) go through the grey chain band by band
    of rows, so that its float64 steps hold a band and not the film: the pixels are those of the whole
    image at once, bit for bit (odd sizes, bands of a few rows)."""
    monkeypatch.setattr(dicom_grey, "_BAND_PIXELS", 1000)
    noise = np.random.default_rng(3).normal(0, 300, (301, 257))
    if values == "wide int32":
        data = dicom((noise * 10_000).astype(np.int32), signed=True, modality="CR", extra=extra)
    else:
        data = float_film(np.full_like(noise, 42.0) if values == "constant" else noise, **extra)
    ds = dcmread(io.BytesIO(data))
    frame = ds.pixel_array
    banded = dicom_grey.grey_levels(frame, ds)  # by bands: too many values for a table
    whole = dicom_grey._grey_chain(frame, ds)
    assert banded.dtype == np.float32 and np.array_equal(banded, whole)


FLOAT_RAMP = np.tile(np.linspace(-100.0, 900.0, 256), (256, 1))


@pytest.mark.parametrize("double", [False, True])
def test_a_windowed_float_film_is_shown_through_its_window(double):
    """Float pixel data has no Bits Stored or Pixel Representation; pydicom's windowing reads them, and
    a float film with a window was refused as damaged (an AttributeError inside pydicom)."""
    image = decode(float_film(FLOAT_RAMP, double, WindowCenter=300, WindowWidth=401)).pixels
    expected = np.clip((FLOAT_RAMP - 299.5) / 400 + 0.5, 0, 1)  # LINEAR: PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(image, expected, atol=1e-6)
    sigmoid = float_film(FLOAT_RAMP, double, WindowCenter=300, WindowWidth=401, VOILUTFunction="SIGMOID")
    np.testing.assert_allclose(decode(sigmoid).pixels, 1 / (1 + np.exp(-4 * (FLOAT_RAMP - 300) / 401)), atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR", "SIGMOID"])
@pytest.mark.parametrize("kind", ["12-bit", "float"])
def test_a_window_after_a_negative_rescale_slope_is_not_inverted(kind, function):
    """pydicom's windowing takes its output range from the rescaled stored range, upside down when the
    slope is negative: its window darkened what it should brighten, and the film came out as a negative
    (dcmtk shows it upright). Through the window, the higher rescaled value is the brighter one."""
    window = {"RescaleSlope": -1, "RescaleIntercept": 4095, "WindowCenter": 2048, "WindowWidth": 2049}
    window["VOILUTFunction"] = function
    if kind == "12-bit":  # a grey-level table
        data = dicom(RAMP, bits_stored=12, modality="CR", extra=window)
    else:  # the chain in bands
        data = float_film(RAMP.astype(np.float32), **window)
    rescaled = 4095.0 - RAMP
    if function == "LINEAR":
        expected = np.clip((rescaled - 2047.5) / 2048 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    else:
        expected = 1 / (1 + np.exp(-4 * (rescaled - 2048) / 2049))
    np.testing.assert_allclose(decode(data).pixels, expected, atol=1e-5)


@pytest.mark.parametrize(("double", "high_bit"), [(False, 31), (True, 63)])
def test_integer_bit_layout_left_on_a_float_film_does_not_cut_its_floats(double, high_bit):
    """Bits Stored 16 and High Bit 31 copied onto a float film from an integer one: the floats' bits were
    shifted and masked as if they were 16-bit samples, and the model got a pattern of noise (pixels up to
    0.76 away from the film's)."""
    plain = decode(float_film(FLOAT_RAMP, double)).pixels
    stray = decode(float_film(FLOAT_RAMP, double, BitsStored=16, HighBit=high_bit, PixelRepresentation=1)).pixels
    np.testing.assert_array_equal(stray, plain)


def with_lut(data: bytes, sequence: str, descriptor: list[int], entries: list[int]) -> bytes:
    ds = dcmread(io.BytesIO(data))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", descriptor)
    item.add_new("LUTData", "US", entries)
    setattr(ds, sequence, [item])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "sequence, descriptor, entries",
    [
        ("VOILUTSequence", [4096, 0, 0], list(range(4096))),  # no entry size
        ("VOILUTSequence", [4096, 0, 40], list(range(4096))),  # no 40-bit entries
        ("VOILUTSequence", [4096, 0, 16], list(range(10))),  # fewer entries than declared
        ("ModalityLUTSequence", [4096, 0], list(range(4096))),  # a descriptor of two values
    ],
)
def test_a_malformed_lut_is_refused_naming_it(sequence, descriptor, entries):
    """A VOI LUT whose descriptor gives 0 or 40 bits an entry was refused as 'compressed in a format this
    server cannot decode (MPEG-2, H.264...)': pydicom's NotImplementedError read as a missing codec, on
    an uncompressed film. Any table that cannot be applied is a damaged file, and the message says which."""
    with pytest.raises(DecodeError) as raised:
        decode(with_lut(dicom(RAMP, bits_stored=12, modality="CR"), sequence, descriptor, entries))
    assert raised.value.code == "corrupt_dicom" and "LUT" in raised.value.message


def test_samples_in_24_bit_words_are_not_called_compressed():
    """Bits Allocated 24 (no numpy type holds it) on an uncompressed film was refused as 'compressed in a
    format this server cannot decode'; the message now says what the file holds and what to export."""
    ds = dcmread(io.BytesIO(dicom(RAMP, bits_stored=12, modality="CR")))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 24, 24, 23
    ds.PixelData = bytes(RAMP.size * 3)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(DecodeError) as raised:
        decode(buffer.getvalue())
    assert raised.value.code == "unsupported_dicom" and "24-bit" in raised.value.message
    assert "compressed" not in raised.value.message


@pytest.mark.parametrize(
    "data",
    [
        with_raw(dicom(RAMP, bits_stored=12, modality="CR"), RescaleSlope=b"1e305", RescaleIntercept=b"0"),
        with_raw(dicom(RAMP, bits_stored=12, modality="CR"), RescaleSlope=b"1e305", RescaleIntercept=b"1e308"),
        float_film(FLOAT_RAMP, RescaleSlope=1e306, RescaleIntercept=0),
        float_film(np.where(FLOAT_RAMP > 300, 1.7e308, -1.7e308), double=True),
    ],
    ids=["slope", "slope and intercept", "float32 rescaled", "float64 span"],
)
def test_pixel_values_beyond_any_number_are_refused_naming_the_rescale(data):
    """Rescale Slope 1e305 on a 12-bit film took its pixels beyond float64: the film came out blank
    (UNKNOWN, 'every pixel has the same value'), and a float film's span overflowed into NaN (refused as
    'not numbers'). Both now say that the values, after the rescale, exceed any number."""
    with pytest.raises(DecodeError) as raised:
        decode(data)
    assert raised.value.code == "corrupt_dicom" and "Rescale Slope" in raised.value.message


def test_a_large_rescale_that_fits_still_shows_the_film():
    plain = decode(dicom(RAMP, bits_stored=12, modality="CR")).pixels
    large = with_raw(dicom(RAMP, bits_stored=12, modality="CR"), RescaleSlope=b"4e304", RescaleIntercept=b"0")
    np.testing.assert_allclose(decode(large).pixels, plain, atol=1e-6)


def test_an_8_bit_voi_lut_over_a_12_bit_film_is_not_wrapped():
    """A VOI LUT of 4096 entries of 8 bits (12-bit film in, 8-bit grey out): pydicom's apply_voi held the
    indices in uint8, the entries' type, so every index wrapped modulo 256 and the film came out as
    stripes (values 0, 257, 514... all read entry 0 and showed black)."""
    lut = [value >> 4 for value in range(4096)]
    data = with_lut(dicom(RAMP, bits_stored=12, modality="CR"), "VOILUTSequence", [4096, 0, 8], lut)
    np.testing.assert_allclose(decode(data).pixels, (RAMP >> 4) / 255, atol=1e-6)
    small = with_lut(dicom((RAMP >> 4).astype(np.uint8), modality="CR"), "VOILUTSequence", [256, 0, 8], lut[::16])
    np.testing.assert_allclose(decode(small).pixels, (RAMP >> 4) / 255, atol=1e-6)  # 256 entries: as before


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("with_limit", [False, True])
def test_float_padding_does_not_set_the_grey_range(double, with_limit):
    """Float films mark 'no data' with Float (or Double Float) Pixel Padding Value, often -3.4e38: left
    in the range, it squeezed the anatomy into one grey level (all white beside a black band, and the
    model read that)."""
    keyword = "DoubleFloatPixelPaddingValue" if double else "FloatPixelPaddingValue"
    padding = {keyword: -3.4e38, **({keyword.replace("Value", "RangeLimit"): -1e30} if with_limit else {})}
    padded = FLOAT_RAMP.copy()
    padded[:40] = -3.4e38
    plain = decode(float_film(FLOAT_RAMP, double)).pixels
    image = decode(float_film(padded, double, **padding)).pixels
    np.testing.assert_array_equal(image[40:], plain[40:])
    assert image[:40].max() == 0.0  # below the image's range: shown at its dark end


def without_planar_configuration(data: bytes) -> bytes:
    ds = dcmread(io.BytesIO(data))
    del ds.PlanarConfiguration
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["JPEG capture", "RGB"])
def test_a_colour_film_without_planar_configuration_reads_as_interleaved(kind):
    """Planar Configuration (required with three samples) left out, as capture devices do: pydicom raised
    'missing required element' and the film was refused as damaged. It reads as interleaved samples, the
    usual layout and the only one a JPEG codec gives."""
    rgb = np.stack([RAMP >> 4, RAMP >> 5, 255 - (RAMP >> 4)], axis=-1).astype(np.uint8)
    data = colour_jpeg_dicom(256) if kind == "JPEG capture" else dicom(rgb, modality="CR")
    plain, bare = decode(data), decode(without_planar_configuration(data))
    np.testing.assert_array_equal(bare.pixels, plain.pixels)
    assert bare.colourfulness == plain.colourfulness
