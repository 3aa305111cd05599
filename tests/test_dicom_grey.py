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
from webapp.inference.decode import decode

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
