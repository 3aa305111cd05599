"""The Analyzer with the shipped model on real fixture films, and the decision rules."""

from __future__ import annotations

import io
import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TEST_POLICY
from webapp.inference.analyzer import Analyzer
from webapp.inference.calibrate import class_probabilities, pneumonia_probability
from webapp.inference.decide import NOT_RECOGNISED, decide
from webapp.inference.decode import decode
from webapp.inference.image import DecodedImage
from webapp.inference.labels import NORMAL, PNEUMONIA, UNKNOWN
from webapp.inference.model_card import ModelCardError, sha256_of
from webapp.inference.overlay import heatmap_png, overlay_png, stored_overlay_png

IMAGES = pathlib.Path(__file__).parent / "fixtures" / "images"
MODEL = pathlib.Path("webapp/weights/cxr_pneumonia.keras")


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(MODEL)


def analyse(analyzer, name):
    return analyzer.analyze(decode((IMAGES / name).read_bytes(), target_size=analyzer.input_size))


def grey(width=100, height=100, colourfulness=0.0, reason=None):
    return DecodedImage(np.zeros((height, width), np.float32), "PNG", width, height, colourfulness, {}, reason)


# ------------------------------------------------------------ the shipped model and card
def test_card_matches_the_shipped_file():
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    assert card["sha256"] == sha256_of(MODEL)
    assert MODEL.stat().st_size < 20 * 1024 * 1024
    assert 0.0 < card["threshold"] < 1.0 and card["temperature"] > 0.0
    for key in ("version", "input", "unknown", "data", "metrics", "training", "intended_use"):
        assert key in card


def test_shipped_file_has_no_optimizer_state():
    import zipfile

    h5py = pytest.importorskip("h5py")
    with (
        zipfile.ZipFile(MODEL) as archive,
        archive.open("model.weights.h5") as raw,
        h5py.File(io.BytesIO(raw.read()), "r") as weights,
    ):
        assert "optimizer" not in weights


@pytest.mark.parametrize("name", ["normal.jpeg", "normal_2.jpeg"])
def test_normal_films(analyzer, name):
    result = analyse(analyzer, name)
    assert result.label == NORMAL and result.unknown_reason is None
    assert result.probabilities["NORMAL"] > 0.5


@pytest.mark.parametrize("name", ["pneumonia.jpeg", "pneumonia_2.jpeg"])
def test_pneumonia_films(analyzer, name):
    result = analyse(analyzer, name)
    assert result.label == PNEUMONIA and result.unknown_reason is None
    assert result.probabilities["PNEUMONIA"] >= result.threshold


@pytest.mark.parametrize("name", ["knee.jpg", "hand.jpg", "mri.jpg", "photo.jpg"])
def test_other_images_are_unknown_with_a_reason(analyzer, name):
    result = analyse(analyzer, name)
    assert result.label == UNKNOWN
    assert "chest radiograph" in result.unknown_reason


def test_analysis_fields(analyzer):
    result = analyse(analyzer, "pneumonia.jpeg")
    assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-9)
    assert result.model_version == analyzer.model_version == analyzer.card["version"]
    assert result.threshold == analyzer.card["threshold"]
    assert result.heatmap.shape == (analyzer.input_size, analyzer.input_size)
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.heatmap.max() > 0.0, "Grad-CAM found no evidence at all"


def test_same_image_same_answer(analyzer):
    first, second = analyse(analyzer, "normal.jpeg"), analyse(analyzer, "normal.jpeg")
    assert first.probabilities == second.probabilities
    np.testing.assert_array_equal(first.heatmap, second.heatmap)


def test_overlay_png(analyzer):
    image = decode((IMAGES / "pneumonia.jpeg").read_bytes())
    result = analyzer.analyze(image)
    png = Image.open(io.BytesIO(overlay_png(image.pixels, result.heatmap)))
    assert png.format == "PNG" and png.size == (image.width, image.height) and png.mode == "RGB"


def test_stored_map_gives_the_overlay_drawn_from_the_film():
    film = np.linspace(0.0, 1.0, 200 * 160, dtype=np.float32).reshape(200, 160)
    heat = np.zeros((128, 128), np.float32)
    heat[30:60, 70:110] = 1.0
    stored = heatmap_png(heat)
    assert Image.open(io.BytesIO(stored)).mode == "L"
    review = io.BytesIO()
    Image.fromarray(np.rint(film * 255).astype(np.uint8), mode="L").save(review, format="PNG")
    drawn = np.asarray(Image.open(io.BytesIO(stored_overlay_png(review.getvalue(), stored))), np.int16)
    direct = np.asarray(Image.open(io.BytesIO(overlay_png(np.rint(film * 255) / 255, heat))), np.int16)
    assert drawn.shape == (200, 160, 3)  # the film's own proportions, not the model's square
    assert np.abs(drawn - direct).max() <= 2
    # The hot block (rows 30-60, columns 70-110 of 128) lands at the same place on the film.
    assert np.ptp(drawn[70, 110]) > 30 and np.ptp(drawn[180, 20]) == 0 and np.ptp(drawn[70, 20]) == 0


def test_an_overlay_stored_by_an_earlier_version_is_served_as_it_is():
    old = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(old, format="PNG")
    assert stored_overlay_png(b"unused", old.getvalue()) == old.getvalue()


def test_a_card_that_does_not_match_the_model_is_refused(tmp_path):
    shutil.copy(MODEL, tmp_path / MODEL.name)
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    card["sha256"] = "0" * 64
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError):
        Analyzer(tmp_path / MODEL.name)


def test_a_missing_card_is_refused(tmp_path):
    shutil.copy(MODEL, tmp_path / MODEL.name)
    with pytest.raises(ModelCardError):
        Analyzer(tmp_path / MODEL.name)


# ------------------------------------------------------------ calibration
def test_temperature_keeps_the_order_and_softens():
    assert pneumonia_probability(0.0, 2.0) == 0.5
    assert pneumonia_probability(3.0, 2.0) < pneumonia_probability(3.0, 1.0)
    assert pneumonia_probability(-800.0, 1.0) == 0.0 and pneumonia_probability(800.0, 1.0) == 1.0
    assert class_probabilities(0.3) == {"NORMAL": 0.7, "PNEUMONIA": 0.3}
    with pytest.raises(ValueError):
        pneumonia_probability(1.0, 0.0)


# ------------------------------------------------------------ decision rules
def test_clear_films_are_called():
    assert decide(grey(), 0.9, 0.99, 1.0, 0.5, TEST_POLICY) == (PNEUMONIA, None)
    assert decide(grey(), 0.1, 0.99, 1.0, 0.5, TEST_POLICY) == (NORMAL, None)


def test_probability_near_threshold_is_uncertain():
    label, reason = decide(grey(), 0.51, 0.99, 1.0, 0.5, TEST_POLICY)
    assert label == UNKNOWN and reason.startswith("Uncertain")


def test_the_uncertain_reason_names_the_threshold_as_the_result_card_does():
    # At two places a site threshold of 0.386 read "0.39" here and "0.386" on the card beside it.
    _, reason = decide(grey(), 0.40, 0.99, 1.0, 0.386, TEST_POLICY)
    assert "is too close to the decision threshold (0.386)" in reason


def test_colour_images_are_not_chest_radiographs():
    label, reason = decide(grey(colourfulness=0.2), 0.9, 0.99, 1.0, 0.5, TEST_POLICY)
    assert label == UNKNOWN and "colour" in reason


@pytest.mark.parametrize("size", [(600, 100), (100, 600)])
def test_extreme_proportions_are_not_chest_radiographs(size):
    label, reason = decide(grey(*size), 0.9, 0.99, 1.0, 0.5, TEST_POLICY)
    assert label == UNKNOWN and "proportions" in reason


def test_low_chest_score_is_not_a_chest_radiograph():
    label, reason = decide(grey(), 0.9, 0.1, 1.0, 0.5, TEST_POLICY)
    assert label == UNKNOWN and reason.startswith(NOT_RECOGNISED)


def test_features_far_from_the_training_films_are_not_a_chest_radiograph():
    label, reason = decide(grey(), 0.9, 0.99, 7.5, 0.5, TEST_POLICY)
    assert label == UNKNOWN and reason.startswith(NOT_RECOGNISED)


def test_a_reason_found_while_decoding_wins():
    label, reason = decide(grey(reason="A CT series is not a projection radiograph."), 0.9, 0.99, 1.0, 0.5, TEST_POLICY)
    assert (label, reason) == (UNKNOWN, "A CT series is not a projection radiograph.")
