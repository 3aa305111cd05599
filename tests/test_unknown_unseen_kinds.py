"""Kinds of image that no training or validation source contains get UNKNOWN from the shipped
model itself (not from the colour or size checks): an MRI slice, a grey portrait, a terrain
elevation map, rendered charts and a report page, and screenshots of this app. Built from
matplotlib's bundled sample data and renders, so nothing is downloaded."""

from __future__ import annotations

import gzip
import io
import pathlib

import numpy as np
import pytest
from PIL import Image

from webapp.inference.analyzer import Analyzer
from webapp.inference.decide import NOT_RECOGNISED
from webapp.inference.decode import decode
from webapp.inference.labels import UNKNOWN

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SAMPLES = pathlib.Path(matplotlib.get_data_path()) / "sample_data"
SCREENSHOTS = pathlib.Path(__file__).parent.parent / "docs" / "screenshots"
MODEL = pathlib.Path("webapp/weights/cxr_pneumonia.keras")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _grey(values: np.ndarray) -> bytes:
    values = values.astype(np.float64)
    values = (values - values.min()) / max(np.ptp(values), 1e-9)
    return _png(Image.fromarray(np.rint(values * 255).astype(np.uint8)))


def _chart(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    if kind == "line":
        ax.plot(np.cumsum(rng.normal(size=200)))
    elif kind == "bar":
        ax.bar(range(8), rng.random(8))
    else:  # a page of report text
        ax.axis("off")
        ax.text(
            0, 1, "\n".join(f"Report line {i}: findings within normal limits." for i in range(18)), va="top", fontsize=7
        )
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return _png(Image.open(out).convert("L"))


def _sample(name: str) -> bytes:
    if name == "mri":
        with gzip.open(SAMPLES / "s1045.ima.gz") as handle:
            raw = handle.read()
        return _grey(np.frombuffer(raw, np.uint16).reshape(256, 256))
    if name == "portrait":
        return _png(Image.open(SAMPLES / "grace_hopper.jpg").convert("L"))
    if name == "terrain":
        with np.load(SAMPLES / "jacksboro_fault_dem.npz") as dem:
            return _grey(dem["elevation"])
    return _png(Image.open(SCREENSHOTS / f"{name}.png").convert("L"))


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(MODEL)


@pytest.mark.parametrize("name", ["mri", "portrait", "terrain", "admin-01-history", "result-pneumonia"])
def test_unseen_images_are_not_chest_radiographs(analyzer, name):
    result = analyzer.analyze(decode(_sample(name), target_size=analyzer.input_size))
    assert result.label == UNKNOWN
    assert result.unknown_reason.startswith(NOT_RECOGNISED)


@pytest.mark.parametrize("kind", ["line", "bar", "text"])
def test_rendered_charts_and_text_are_not_chest_radiographs(analyzer, kind):
    result = analyzer.analyze(decode(_chart(kind), target_size=analyzer.input_size))
    assert result.label == UNKNOWN
    assert result.unknown_reason.startswith(NOT_RECOGNISED)
