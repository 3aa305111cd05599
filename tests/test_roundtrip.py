"""One radiograph, four containers, one answer.

The same chest film as the 8-bit JPEG it came as, a 16-bit PNG, a MONOCHROME2 DICOM
(12-bit, windowed) and a MONOCHROME1 DICOM (inverted stored values) must get the same
verdict and calibrated probabilities within 0.02 from the shipped model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import IMAGES
from tests.image_samples import dicom, png
from webapp.inference.decode import decode

MODEL = Path(__file__).resolve().parent.parent / "webapp" / "weights" / "cxr_pneumonia.keras"
FILMS = ["normal.jpeg", "pneumonia.jpeg"]


@pytest.fixture(scope="module")
def analyzer():
    # The process-wide instance the app tests also use: the model is loaded once per run.
    from webapp.inference.runtime import get_analyzer

    return get_analyzer(MODEL)


def containers(jpeg_bytes: bytes) -> dict[str, bytes]:
    grey = np.asarray(Image.open(io.BytesIO(jpeg_bytes)).convert("L"))
    stored = grey.astype(np.uint16) * 16  # 8-bit film on a 12-bit detector scale
    return {
        "jpeg": jpeg_bytes,
        "png16": png(grey.astype(np.uint16) * 257),
        "dicom_mono2": dicom(stored, bits_stored=12, window=(2048, 4096)),
        "dicom_mono1": dicom(4095 - stored, bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1"),
    }


@pytest.mark.parametrize("film", FILMS)
def test_same_film_same_answer_in_every_container(analyzer, film):
    variants = containers((IMAGES / film).read_bytes())
    results = {}
    for name, data in variants.items():
        image = decode(data, target_size=analyzer.input_size)
        results[name] = analyzer.analyze(image)
    reference = results["jpeg"]
    for name, analysis in results.items():
        assert analysis.label == reference.label, name
        for cls in ("NORMAL", "PNEUMONIA"):
            assert analysis.probabilities[cls] == pytest.approx(reference.probabilities[cls], abs=0.02), name


def test_the_containers_really_differ(analyzer):
    """Guard against a test that passes because every variant is secretly the same file."""
    variants = containers((IMAGES / FILMS[0]).read_bytes())
    assert len({data[:16] for data in variants.values()}) >= 3
    formats = {decode(data).format for data in variants.values()}
    assert formats == {"JPEG", "PNG", "DICOM"}
    mono1 = decode(variants["dicom_mono1"]).pixels
    jpeg = decode(variants["jpeg"]).pixels
    assert np.abs(mono1 - jpeg).mean() < 0.01  # inversion undone, not skipped
