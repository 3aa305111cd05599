"""Compressed DICOM frames that their codecs decode without a word although part of the picture is
missing or forged, and how their refusals read (a PACS receipt shows them to the sending site)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000, JPEG2000Lossless

from tests.hostile_corpus import dicom_holding_jpeg, jpeg_cut_with_eoi, progressive_first_scans
from tests.image_samples import dicom, encode, gradient
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


def _encoded(tmp_path, tool: str, *options: str) -> bytes:
    """A 12-bit 256 x 256 film with noise (tmp_path/film.dcm), as dcmtk's `tool` compresses it."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install dcmtk)")
    noise = np.random.default_rng(7).integers(0, 32, (256, 256), dtype=np.uint16)
    (tmp_path / "film.dcm").write_bytes(dicom(gradient(levels=4000) + noise, bits_stored=12))
    subprocess.run([tool, *options, str(tmp_path / "film.dcm"), str(tmp_path / "encoded.dcm")], check=True)
    return (tmp_path / "encoded.dcm").read_bytes()


def _lossless(tmp_path, *options: str) -> bytes:
    """In lossless JPEG (process 14)."""
    return _encoded(tmp_path, "dcmcjpeg", *options)


def _cut_with_eoi(data: bytes, fraction: float) -> bytes:
    ds = dcmread(io.BytesIO(data))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    cut = frame[: int(len(frame) * fraction)] + b"\xff\xd9"
    ds.PixelData = encapsulate([cut + bytes(len(cut) % 2)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("options", [("+e1",), ("+el",)], ids=["SV1", "process-14"])
@pytest.mark.parametrize("fraction", [0.3, 0.9, 0.99])
def test_a_lossless_jpeg_frame_cut_short_with_an_eoi_appended_is_refused(tmp_path, options, fraction):
    # libjpeg decoded it without a word, the rest of the film a ramp of its zero-bit fill.
    refused = refusal(_cut_with_eoi(_lossless(tmp_path, *options), fraction))
    assert refused.code == "truncated"
    assert "DICOM file" in refused.message


@pytest.mark.parametrize("selection", range(1, 8))
def test_complete_lossless_jpeg_films_of_every_predictor_still_decode_exactly(tmp_path, selection):
    data = _lossless(tmp_path, "+el", "+sv", str(selection))
    expected = decode((tmp_path / "film.dcm").read_bytes(), target_size=None).pixels
    assert np.array_equal(decode(data, target_size=None).pixels, expected)


def _jpeg_ls(tmp_path, *options: str) -> bytes:
    return _encoded(tmp_path, "dcmcjpls", *options)


@pytest.mark.parametrize("options", [("+el",), ("+en", "+md", "2")], ids=["lossless", "near-lossless"])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.99])
def test_a_jpeg_ls_frame_cut_short_with_an_eoi_appended_is_refused(tmp_path, options, fraction):
    # pylibjpeg-libjpeg, pydicom's first choice, filled the rest with a smooth continuation, without a word.
    assert refusal(_cut_with_eoi(_jpeg_ls(tmp_path, *options), fraction)).code == "corrupt_dicom"


def test_a_complete_jpeg_ls_film_decodes_exactly(tmp_path):
    data = _jpeg_ls(tmp_path, "+el")
    expected = decode((tmp_path / "film.dcm").read_bytes(), target_size=None).pixels
    assert np.array_equal(decode(data, target_size=None).pixels, expected)


def _j2k_claiming(side: int) -> bytes:
    """A 64 x 64 film's 1 KB JPEG 2000 codestream whose SIZ was rewritten to `side` x `side` in one
    tile, in a DICOM that says the same: openjpeg decoded it leniently, as noise."""
    codestream = bytearray(encode(Image.fromarray(gradient(64, 64)), "JPEG2000", no_jp2=True))
    struct.pack_into(">IIIIII", codestream, 8, side, side, 0, 0, side, side)  # Xsiz, Ysiz, offsets, XTsiz, YTsiz
    ds = dcmread(io.BytesIO(dicom(gradient(64, 64))))
    ds.Rows = ds.Columns = side
    ds.PixelData = encapsulate([bytes(codestream) + bytes(len(codestream) % 2)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_a_jpeg_2000_frame_with_far_too_few_bytes_for_its_size_is_refused():
    refused = refusal(_j2k_claiming(2000))
    assert refused.code == "corrupt_dicom"
    assert "bytes for 2000x2000 pixels" in refused.message


@pytest.mark.parametrize("ratio", [100, 200])
def test_a_jpeg_2000_film_compressed_far_beyond_radiology_practice_still_decodes(ratio):
    noise = np.random.default_rng(3).integers(0, 32, (512, 512), dtype=np.uint16)
    ds = dcmread(io.BytesIO(dicom(gradient(512, 512, levels=4000) + noise, bits_stored=12)))
    ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[ratio])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert decode(buffer.getvalue(), target_size=None).pixels.shape == (512, 512)
