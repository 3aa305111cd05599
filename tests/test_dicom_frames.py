"""Compressed DICOM frames that their codecs decode without a word although part of the picture is
missing or forged, and how their refusals read (a PACS receipt shows them to the sending site)."""

from __future__ import annotations

import pytest

from tests.hostile_corpus import dicom_holding_jpeg, jpeg_cut_with_eoi, progressive_first_scans
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError


def refusal(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, target_size=224)
    return caught.value


@pytest.mark.parametrize("frame", [jpeg_cut_with_eoi(0.6), progressive_first_scans(1)], ids=["cut", "first-scan"])
def test_a_cut_jpeg_frame_is_refused_in_dicom_terms_not_asked_to_be_uploaded_again(frame):
    refused = refusal(dicom_holding_jpeg(frame))
    assert refused.code == "truncated"
    assert "DICOM file" in refused.message
    assert "upload" not in refused.message.lower()
