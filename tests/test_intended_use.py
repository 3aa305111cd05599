"""The intended use enforced: a header age decides first, the image gate otherwise; adults are
UNKNOWN with a reason naming the intended use, a child outside the validated ages gets a caution."""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TEST_POLICY, csrf_token, fixture_image
from tests.image_samples import dicom
from webapp.inference.analyzer import Analyzer
from webapp.inference.decide import NOT_RECOGNISED, decide
from webapp.inference.decode import decode
from webapp.inference.image import DecodedImage
from webapp.inference.intended_use import IntendedUse
from webapp.inference.labels import NORMAL, PNEUMONIA, UNKNOWN
from webapp.inference.model_card import ServingParams

MODEL = pathlib.Path("webapp/weights/cxr_pneumonia.keras")
GATE = IntendedUse(
    max_adult_probability=0.9,
    adult_from_years=18.0,
    validated_from_years=1.0,
    validated_below_years=6.0,
    version="test",
)


def film(age=None, reason=None):
    return DecodedImage(np.zeros((100, 100), np.float32), "DICOM", 100, 100, 0.0, {}, reason, age)


# ------------------------------------------------------------ the rules
def test_an_adult_header_age_is_unknown_whatever_the_gate_says():
    label, reason = decide(film(age=45.0), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.01, intended_use=GATE)
    assert label == UNKNOWN
    assert "intended use" in reason and "18 years or older" in reason and "children" in reason
    assert "45" not in reason  # the reason is stored with the prediction; the age itself is not
    assert decide(film(age=18.0), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, 0.01, GATE)[0] == UNKNOWN


def test_a_child_header_age_beats_the_image_gate():
    assert decide(film(age=3.0), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.99, intended_use=GATE) == (PNEUMONIA, None)
    assert decide(film(age=17.9), 0.1, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.99, intended_use=GATE) == (NORMAL, None)


def test_without_an_age_the_gate_decides():
    label, reason = decide(film(), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.95, intended_use=GATE)
    assert label == UNKNOWN and reason.startswith("Outside the intended use") and "adult" in reason
    assert decide(film(), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.9, intended_use=GATE) == (PNEUMONIA, None)


@pytest.mark.parametrize("extra", [{"PatientAge": "000Y"}, {"PatientBirthDate": "20260101", "StudyDate": "20260101"}])
def test_a_placeholder_age_of_zero_leaves_the_decision_to_the_gate(extra):
    # "000Y" or a birth on the study date is how an unknown patient is registered, not a newborn.
    image = decode(dicom(np.zeros((64, 64), np.uint8), modality="CR", extra=extra))
    assert image.age_years is None
    label, reason = decide(film(image.age_years), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, p_adult=0.95, intended_use=GATE)
    assert label == UNKNOWN and reason.startswith("Outside the intended use") and "adult" in reason


def test_input_and_not_chest_reasons_come_first():
    label, reason = decide(film(age=45.0, reason="A CT slice."), 0.9, 0.99, 1.0, 0.5, TEST_POLICY, 0.99, GATE)
    assert reason == "A CT slice."
    label, reason = decide(film(), 0.9, 0.1, 1.0, 0.5, TEST_POLICY, 0.99, GATE)
    assert reason.startswith(NOT_RECOGNISED)


@pytest.mark.parametrize("p_chest, distance", [(0.1, 1.0), (0.99, 7.5)])
def test_a_film_the_model_does_not_recognise_is_told_the_intended_use(p_chest, distance):
    # An adult's chest film from an unfamiliar hospital often stops here, before the gate: the
    # reason must not tell the radiologist it is "not a chest film" without naming what the model is for.
    label, reason = decide(film(), 0.9, p_chest, distance, 0.5, TEST_POLICY, 0.01, GATE)
    assert label == UNKNOWN and reason.startswith(NOT_RECOGNISED)
    assert "young child" in reason and "intended use" in reason and "adult" in reason


def test_a_model_without_a_gate_skips_the_layer():
    assert decide(film(age=45.0), 0.9, 0.99, 1.0, 0.5, TEST_POLICY) == (PNEUMONIA, None)


@pytest.mark.parametrize(
    "age, cautioned",
    [
        (None, False),
        (0.0, True),
        (0.5, True),
        (0.99, True),
        (1.0, False),
        (3.0, False),
        (5.99, False),
        (6.0, True),
        (12.0, True),
        (17.9, True),
        (18.0, False),
        (60.0, False),
    ],
)
def test_caution_outside_the_validated_ages(age, cautioned):
    caution = GATE.caution(film(age=age))
    assert (caution is not None) == cautioned
    if cautioned:
        assert "outside the validated age range" in caution.lower() and "1 to 5 years" in caution


def test_the_card_section_is_read(analyzer):
    card = dict(analyzer.card)
    card["intended_use_gate"] = {
        "version": "gate-x",
        "max_adult_probability": 0.8,
        "adult_from_years": 18,
        "validated_age_years": {"from": 1, "below": 6},
    }
    assert ServingParams.from_card(card).intended_use == IntendedUse(0.8, 18.0, 1.0, 6.0, "gate-x")
    del card["intended_use_gate"]
    assert ServingParams.from_card(card).intended_use is None


# ------------------------------------------------------------ the shipped model
@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(MODEL)


def same_pixels_as_dicom(jpeg_bytes: bytes, age: str | None) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg_bytes)).convert("L"))
    return dicom(pixels, modality="CR", extra={"PatientAge": age} if age else None)


def test_the_shipped_card_carries_the_gate(analyzer):
    gate = analyzer.params.intended_use
    assert gate is not None and 0.5 <= gate.max_adult_probability < 1.0
    assert gate.adult_from_years == 18.0 and (gate.validated_from_years, gate.validated_below_years) == (1.0, 6.0)
    assert analyzer.card["intended_use_gate"]["version"] == gate.version


@pytest.mark.parametrize("name", ["normal.jpeg", "pneumonia.jpeg"])
def test_dicom_with_an_adult_age_is_unknown_and_a_child_age_matches_the_jpeg(analyzer, name):
    jpeg = analyzer.analyze(decode(fixture_image(name), target_size=analyzer.input_size))
    assert jpeg.label in (NORMAL, PNEUMONIA)
    adult = analyzer.analyze(decode(same_pixels_as_dicom(fixture_image(name), "045Y"), target_size=128))
    assert adult.label == UNKNOWN and "intended use" in adult.unknown_reason and adult.caution is None
    child_image = decode(same_pixels_as_dicom(fixture_image(name), "003Y"), target_size=128)
    # The same film: the two decoders scale 8-bit values by 1/255 in different float32 steps, so the
    # pixels agree to 1e-7 (and the scores to a few thousandths, through the resize).
    np.testing.assert_allclose(child_image.pixels, decode(fixture_image(name)).pixels, atol=1e-6)
    child = analyzer.analyze(child_image)
    assert (child.label, child.unknown_reason, child.caution) == (jpeg.label, None, None)
    assert child.probabilities[PNEUMONIA] == pytest.approx(jpeg.probabilities[PNEUMONIA], abs=0.01)


def test_a_child_outside_the_validated_ages_is_answered_with_a_caution(analyzer):
    jpeg = analyzer.analyze(decode(fixture_image("pneumonia.jpeg")))
    older = analyzer.analyze(decode(same_pixels_as_dicom(fixture_image("pneumonia.jpeg"), "010Y")))
    assert older.label == jpeg.label and "outside the validated age range" in older.caution.lower()
    baby = analyzer.analyze(decode(same_pixels_as_dicom(fixture_image("pneumonia.jpeg"), "006M")))
    assert baby.label == jpeg.label and baby.caution is not None


def test_an_adult_film_without_a_header_is_refused_by_the_gate(analyzer):
    result = analyzer.analyze(decode(fixture_image("adult.jpeg")))
    assert result.label == UNKNOWN and result.unknown_reason.startswith("Outside the intended use")
    assert result.adult_probability > analyzer.params.intended_use.max_adult_probability
    # The same adult film with a child's age in its header: the header wins.
    child = analyzer.analyze(decode(same_pixels_as_dicom(fixture_image("adult.jpeg"), "004Y")))
    assert child.unknown_reason is None or "intended use" not in child.unknown_reason


def test_the_api_returns_the_caution(client, api_token):
    body = same_pixels_as_dicom(fixture_image("pneumonia.jpeg"), "012Y")
    response = client.post(
        "/api/v1/predictions",
        headers={"Authorization": f"Bearer {api_token}"},
        data={"file": [(io.BytesIO(body), "older_child.dcm")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    (item,) = response.json["predictions"]
    assert "outside the validated age range" in item["caution"].lower()
    again = client.get(f"/api/v1/predictions/{item['id']}", headers={"Authorization": f"Bearer {api_token}"})
    assert again.json["caution"] == item["caution"]
    plain = client.post(
        "/api/v1/predictions",
        headers={"Authorization": f"Bearer {api_token}"},
        data={"file": [(io.BytesIO(fixture_image("pneumonia.jpeg")), "p.jpeg")]},
        content_type="multipart/form-data",
    )
    assert plain.json["predictions"][0]["caution"] is None


def upload_older_childs_film(client, **kwargs):
    """A 12-year-old's film through the upload page: answered, with the age-range caution."""
    body = same_pixels_as_dicom(fixture_image("pneumonia.jpeg"), "012Y")
    return client.post(
        "/screen",
        data={"csrf_token": csrf_token(client, "/screen"), "files": [(io.BytesIO(body), "older_child.dcm")]},
        content_type="multipart/form-data",
        **kwargs,
    )


def test_the_result_card_shows_the_caution(auth, client, clinician_user):
    auth.login()
    response = upload_older_childs_film(client, follow_redirects=True)
    assert response.status_code == 200
    assert b'class="caution"' in response.data and b"outside the validated age range" in response.data.lower()


def test_the_printable_result_keeps_the_caution(auth, client, clinician_user):
    """The printed page is what goes into the notes: a caution the result card shows must be on it
    (the print view left it out). The CSV's `caution` column: test_reading.py."""
    auth.login()
    response = upload_older_childs_film(client)
    prediction_id = int(response.headers["Location"].rsplit("id=", 1)[1])
    printed = client.get(f"/predictions/{prediction_id}/print")
    assert printed.status_code == 200
    assert b'class="caution"' in printed.data and b"outside the validated age range" in printed.data.lower()
