"""The transfer syntaxes a film to be screened is taken in: every one the node accepts for CR and DX is
decoded from a real encoded film (dcmtk's converters and compressors, pydicom's encoders), and a film
proposed only in a syntax the decoder does not read is refused at association, by pynetdicom and by
dcmtk's storescu, with nothing stored. Until 5 December such a film (JPEG XL, MPEG-2, HEVC...) was
accepted, answered Success and refused at screening, seen on the outbox page only."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from sqlalchemy import func, select

from tests.dicom_films import MODALITY_AE, film
from tests.helpers import drain
from webapp.extensions import db
from webapp.inference.decode import decode
from webapp.inference.dicom import DECODABLE_TRANSFER_SYNTAXES
from webapp.models import RECEIPT_SCREENED, DicomReceipt
from webapp.pacs import spool

JPEG_XL = UID("1.2.840.10008.1.2.4.112")
HEVC = UID("1.2.840.10008.1.2.4.107")
JPEG2000_PART2 = UID("1.2.840.10008.1.2.4.92")


def _tool(name: str, *options: str):
    """A dcmtk converter or compressor run on the uncompressed film."""

    def make(source: Path, target: Path) -> None:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed (apt-get install dcmtk)")
        subprocess.run([name, *options, str(source), str(target)], check=True, capture_output=True, timeout=120)

    return make


def _pydicom(syntax: UID, labelled: UID | None = None, **options):
    """pydicom's own encoder (pylibjpeg-openjpeg for JPEG 2000). `labelled`: the same codestream under
    another syntax, for the HTJ2K ones, which no installed encoder writes (see HTJ2K below)."""

    def make(source: Path, target: Path) -> None:
        ds = dcmread(source)
        ds.compress(syntax, encoding_plugin="pylibjpeg", **options)
        if labelled:
            ds.file_meta.TransferSyntaxUID = labelled
        ds.save_as(target, enforce_file_format=True)

    return make


# How each decodable syntax is made here, and whether it loses nothing. The HTJ2K syntaxes: no encoder
# installed writes HT code blocks (openjpeg encodes JPEG 2000 Part 1 only), so a Part 1 codestream, which
# an HTJ2K decoder reads too, is labelled HTJ2K: this proves the node's path for those syntaxes (frame
# header check, pydicom's decoder for them), not openjpeg's HT block decoder.
MAKERS = {
    "1.2.840.10008.1.2": (_tool("dcmconv", "+ti"), True),
    "1.2.840.10008.1.2.1": (_tool("dcmconv", "+te"), True),
    "1.2.840.10008.1.2.2": (_tool("dcmconv", "+tb"), True),
    "1.2.840.10008.1.2.4.50": (_tool("dcmcjpeg", "+eb"), False),
    "1.2.840.10008.1.2.4.51": (_tool("dcmcjpeg", "+ee"), False),
    "1.2.840.10008.1.2.4.57": (_tool("dcmcjpeg", "+el"), True),
    "1.2.840.10008.1.2.4.70": (_tool("dcmcjpeg", "+e1"), True),
    "1.2.840.10008.1.2.4.80": (_tool("dcmcjpls", "+el"), True),
    "1.2.840.10008.1.2.4.81": (_tool("dcmcjpls", "+en"), False),
    "1.2.840.10008.1.2.4.90": (_pydicom(JPEG2000Lossless), True),
    "1.2.840.10008.1.2.4.91": (_pydicom(JPEG2000, j2k_cr=[20]), False),
    "1.2.840.10008.1.2.4.201": (_pydicom(JPEG2000Lossless, HTJ2KLossless), True),
    "1.2.840.10008.1.2.4.202": (_pydicom(JPEG2000Lossless, HTJ2KLosslessRPCL), True),
    "1.2.840.10008.1.2.4.203": (_pydicom(JPEG2000, HTJ2K, j2k_cr=[20]), False),
    "1.2.840.10008.1.2.5": (_tool("dcmcrle"), True),
}


def test_every_decodable_syntax_has_a_real_film_here():
    # A syntax a new plugin brings is accepted by the node at once: this fails until it is proven below.
    assert set(DECODABLE_TRANSFER_SYNTAXES) == set(MAKERS)
    for undecodable in (DeflatedExplicitVRLittleEndian, JPEG_XL, MPEG2MPML, HEVC, JPEG2000_PART2):
        assert undecodable not in DECODABLE_TRANSFER_SYNTAXES


@pytest.fixture(scope="module", params=[8, 12], ids=["8-bit", "12-bit"])
def uncompressed(request, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The fixture film uncompressed: 8 bits, and 12 bits stored in 16 (as most CR and DX films are)."""
    ds = dcmread(io.BytesIO(film(0)))
    if request.param == 12:
        ds.PixelData = (ds.pixel_array.astype(np.uint16) * 16 + 7).tobytes()
        ds["PixelData"].VR = "OW"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    path = tmp_path_factory.mktemp("films") / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, decode(path.read_bytes(), target_size=None).pixels


@pytest.mark.parametrize("syntax", sorted(MAKERS))
def test_each_accepted_syntax_decodes_from_a_real_encoded_film(syntax, uncompressed, tmp_path):
    source, expected = uncompressed
    make, lossless = MAKERS[syntax]
    target = tmp_path / "encoded.dcm"
    make(source, target)
    data = target.read_bytes()
    assert dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    pixels = decode(data, target_size=None).pixels
    assert pixels.shape == expected.shape
    difference = np.abs(pixels - expected)
    if lossless:
        assert difference.max() < 1e-6
    else:
        assert 0 < difference.mean() < 0.02


def nothing_stored(app) -> bool:
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(DicomReceipt))
        return rows == 0 and not list(spool.folder(spool.SPOOL).iterdir()) and app.extensions["jobs"].pending() == 0


def wait_for(caplog, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)


REFUSED_LINE = "none of the transfer syntaxes proposed (the first: {}) is one the screening decodes"


@pytest.mark.parametrize("syntax", [JPEG_XL, MPEG2MPML, HEVC, JPEG2000_PART2])
def test_a_film_proposed_only_in_a_syntax_not_decoded_is_refused_at_association(dicom_port, app, caplog, syntax):
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(ComputedRadiographyImageStorage, [syntax])
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, [syntax, DeflatedExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN")
    assert not assoc.is_established  # no context accepted: pynetdicom aborts, as any sender would
    wait_for(caplog, "refused")
    assert f"'{MODALITY_AE}' at 127.0.0.1: 2 presentation context(s) refused" in caplog.text
    assert f"Computed Radiography Image Storage: {REFUSED_LINE.format(syntax.name)}" in caplog.text
    assert nothing_stored(app)


def test_a_film_proposed_in_an_undecodable_and_a_decodable_syntax_is_taken_in_the_decodable_one(dicom_port, app):
    ds = dcmread(io.BytesIO(film(0)))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(ComputedRadiographyImageStorage, [JPEG_XL, MPEG2MPML, JPEG2000Lossless])
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN")
    assert assoc.is_established
    try:
        assert [c.transfer_syntax[0] for c in assoc.accepted_contexts] == [JPEG2000Lossless]
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    assert drain(app) == 1
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_SCREENED


def test_other_classes_are_still_taken_in_any_syntax_but_deflated(dicom_port):
    # Skipped unscreened, they need no decoder: a "route everything" rule must not fail on them.
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", [MPEG2MPML])  # CT
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CXRSCREEN")
    assert assoc.is_established
    assoc.release()


def storescu(port: int, path: Path, *options: str) -> subprocess.CompletedProcess:
    if shutil.which("storescu") is None:
        pytest.skip("storescu is not installed (apt-get install dcmtk)")
    return subprocess.run(
        ["storescu", "-aet", MODALITY_AE, "-aec", "CXRSCREEN", *options, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_storescu_is_refused_an_mpeg2_only_film_and_nothing_is_stored(dicom_port, app, caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    ds = dcmread(io.BytesIO(film(0)))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")  # encapsulated pixel data, relabelled MPEG-2
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    sent = storescu(dicom_port, path, "-xm")
    assert sent.returncode != 0
    assert "no presentation context" in (sent.stdout + sent.stderr).lower()
    wait_for(caplog, "refused")
    assert REFUSED_LINE.format(MPEG2MPML.name) in caplog.text
    assert nothing_stored(app)


def test_storescu_proposing_mpeg2_and_jpeg_lossless_in_one_context_sends_in_jpeg_lossless(dicom_port, app, tmp_path):
    source = tmp_path / "film.dcm"
    source.write_bytes(film(0))
    jpeg = tmp_path / "jpeg.dcm"
    _tool("dcmcjpeg", "+e1")(source, jpeg)
    config = tmp_path / "storescu.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Mixed]\n"
        f"TransferSyntax1 = {MPEG2MPML}\nTransferSyntax2 = {JPEGLosslessSV1}\n"
        "[[PresentationContexts]]\n[Contexts]\n"
        "PresentationContext1 = ComputedRadiographyImageStorage\\Mixed\n"
        "[[Profiles]]\n[Mixed]\nPresentationContexts = Contexts\n"
    )
    sent = storescu(dicom_port, jpeg, "-xf", str(config), "Mixed")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert drain(app) == 1
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_SCREENED
