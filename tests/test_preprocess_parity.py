"""Training and serving must feed the model the same tensor for the same file."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from training import data
from webapp.inference.decode import decode
from webapp.inference.preprocess import equalise, preprocess

IMAGES = pathlib.Path(__file__).parent / "fixtures" / "images"
FILES = sorted(IMAGES.glob("*.jp*g"))
SIZE = 128


def served_input(path: pathlib.Path, size: int) -> np.ndarray:
    """What the web app does with an upload: decode(bytes) -> preprocess."""
    return preprocess(decode(path.read_bytes(), target_size=size).pixels, size)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_training_loader_gives_the_served_tensor(path):
    np.testing.assert_array_equal(data.load_input(path, SIZE), served_input(path, SIZE))


def test_cached_training_arrays_are_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path)
    fresh = data.load_inputs(FILES, SIZE)
    cached = data.load_inputs(FILES, SIZE)
    assert list(tmp_path.iterdir()), "the cache file was not written"
    served = np.stack([served_input(p, SIZE) for p in FILES])
    np.testing.assert_array_equal(fresh, served)
    np.testing.assert_array_equal(cached, served)


def test_shipped_model_scores_the_training_tensor_like_the_analyzer():
    keras = pytest.importorskip("keras")
    from webapp.inference.analyzer import Analyzer
    from webapp.inference.calibrate import pneumonia_probability

    model_path = pathlib.Path("webapp/weights/cxr_pneumonia.keras")
    analyzer = Analyzer(model_path)
    model = keras.saving.load_model(model_path, compile=False)
    for path in FILES:
        x = data.load_input(path, analyzer.input_size)[None]
        outputs = model(x, training=False)
        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        logit = float(np.asarray(logits)[0, 0])
        served = analyzer.analyze(decode(path.read_bytes(), target_size=analyzer.input_size))
        assert served.probabilities["PNEUMONIA"] == pytest.approx(
            pneumonia_probability(logit, analyzer.temperature), abs=1e-5
        )


def test_preprocess_output_spec():
    pixels = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    x = preprocess(pixels, SIZE)
    assert x.shape == (SIZE, SIZE, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_equalisation_removes_global_exposure_differences():
    pixels = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    darker = pixels * 0.5  # a monotonic change of exposure
    np.testing.assert_allclose(equalise(pixels), equalise(darker), atol=0.02)


def test_flat_image_maps_to_mid_grey():
    assert np.all(preprocess(np.zeros((40, 40), np.float32), 16) == 0.5)


def test_preprocess_refuses_colour_arrays():
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10, 3), np.float32), 16)
