"""Training and serving must feed the model the same tensor for the same file."""

from __future__ import annotations

import io
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


def containers(path: pathlib.Path) -> dict[str, bytes]:
    """The same 8-bit film as a 16-bit PNG (values x257), an 8-bit DICOM and a 16-bit DICOM."""
    from PIL import Image

    from tests.image_samples import dicom

    grey = np.asarray(Image.open(path).convert("L"))
    png16 = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(png16, "PNG")
    return {
        "png16": png16.getvalue(),
        "dicom8": dicom(grey),
        "dicom16": dicom(grey.astype(np.uint16) * 257, bits_stored=16),
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_same_film_in_any_container_gives_the_training_tensor(path):
    # Their decoded values lie a float ulp from the JPEG's; before grey_levels, the resize turned that
    # into a level's difference in up to 800 of the 16,384 pixels of the model input.
    training = data.load_input(path, SIZE)
    for name, body in containers(path).items():
        np.testing.assert_array_equal(served_input_of(body, SIZE), training, err_msg=name)


def served_input_of(body: bytes, size: int) -> np.ndarray:
    return preprocess(decode(body, target_size=size).pixels, size)


def test_a_film_through_the_api_scores_as_the_model_scores_its_training_tensor(app, api_token):
    keras = pytest.importorskip("keras")
    from tests.helpers import api_upload
    from webapp.inference.calibrate import pneumonia_probability
    from webapp.inference.model_card import read_card

    model_path = pathlib.Path(app.config["MODEL_PATH"])
    card = read_card(model_path)
    model = keras.saving.load_model(model_path, compile=False)
    path = IMAGES / "normal.jpeg"
    logit = float(np.asarray(model(data.load_input(path, card["input"]["size"])[None], training=False)[0])[0, 0])
    expected = pneumonia_probability(logit, card["temperature"])
    uploads = [("film.jpeg", path.read_bytes())] + [(f"film-{k}", v) for k, v in containers(path).items()]
    response = api_upload(app.test_client(), api_token, *uploads)
    assert response.status_code == 201, response.get_json()
    scores = [p["probabilities"]["PNEUMONIA"] for p in response.get_json()["predictions"]]
    assert scores == [pytest.approx(expected, abs=2e-6)] * len(uploads)
    assert len(set(scores)) == 1  # bit-identical inputs: the very same score whatever the container


def test_only_8bit_data_are_put_on_the_jpeg_decoders_levels():
    from webapp.inference.image import on_8bit_levels

    jpeg_levels = np.arange(256, dtype=np.float32) * np.float32(1 / 255)  # what the raster decoder writes
    correctly_rounded = (np.arange(256) / 255).astype(np.float32)  # k/255 as the DICOM chain computes it
    assert not np.array_equal(correctly_rounded, jpeg_levels)  # an ulp apart for some k
    np.testing.assert_array_equal(on_8bit_levels(correctly_rounded.reshape(16, 16)).ravel(), jpeg_levels)
    twelve_bit = (np.arange(4096) / 4095).astype(np.float32).reshape(64, 64)
    np.testing.assert_array_equal(on_8bit_levels(twelve_bit.copy()), twelve_bit)  # finer data untouched
