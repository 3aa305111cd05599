"""The patient's age from a DICOM header: Age Strings in every unit, birth-date arithmetic,
malformed values (ignored, never an error), and what the decoder keeps of them."""

from __future__ import annotations

import datetime

import pytest

from tests.image_samples import PATIENT, dicom, gradient
from webapp.inference.age import age_from_header, parse_date, years_between, years_from_age_string
from webapp.inference.decode import decode


@pytest.mark.parametrize(
    "value, years",
    [
        ("045Y", 45.0),
        ("003Y", 3.0),
        ("120Y", 120.0),
        ("006M", 0.5),
        ("018M", 1.5),
        ("240M", 20.0),
        ("010W", 70 / 365.25),
        ("052W", 364 / 365.25),
        ("003D", 3 / 365.25),
        ("365D", 365 / 365.25),
        (" 045Y ", 45.0),
        ("045y", 45.0),
        ("45Y", 45.0),
        ("5Y", 5.0),
    ],
)
def test_age_strings_in_every_unit(value, years):
    assert years_from_age_string(value) == pytest.approx(years)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "Y",
        "045",
        "45",
        "045X",
        "04.5Y",
        "-05Y",
        "1045Y",
        "045YY",
        "forty-five",
        "045 Years",
        "999Y",
        "O45Y",
        "４５Y",
        b"045Y",
        45,
        45.0,
        "045Y\\003Y",
        "000Y",  # the placeholder for an unknown patient: an age of 0 would switch the adult gate off
        "000M",
        "0D",
    ],
)
def test_malformed_age_strings_are_ignored(value):
    assert years_from_age_string(value) is None


@pytest.mark.parametrize(
    "value, date",
    [
        ("20240229", datetime.date(2024, 2, 29)),
        ("1980.01.01", datetime.date(1980, 1, 1)),
        (" 20200315 ", datetime.date(2020, 3, 15)),
    ],
)
def test_dates(value, date):
    assert parse_date(value) == date


@pytest.mark.parametrize(
    "value",
    [None, "", "2024", "202402", "20241301", "20240230", "2024-01-01", "abcdefgh", "00000000", "20240101120000"],
)
def test_malformed_dates_are_ignored(value):
    assert parse_date(value) is None


def test_birth_date_arithmetic():
    d = datetime.date
    assert years_between(d(2020, 5, 10), d(2023, 5, 10)) == 3.0  # the birthday itself
    assert years_between(d(2020, 5, 10), d(2023, 5, 9)) == pytest.approx(2 + 364 / 365)  # the day before
    assert years_between(d(2005, 1, 1), d(2023, 1, 1)) == 18.0  # an 18th birthday: an adult
    assert years_between(d(2005, 1, 2), d(2023, 1, 1)) < 18.0
    assert years_between(d(2023, 1, 1), d(2023, 7, 2)) == pytest.approx(182 / 365)  # half a year old
    assert years_between(d(2023, 1, 1), d(2023, 1, 1)) == 0.0  # born the day of the study
    # Born on 29 February: the birthday in a common year is 1 March.
    assert years_between(d(2020, 2, 29), d(2021, 2, 28)) < 1.0
    assert years_between(d(2020, 2, 29), d(2021, 3, 1)) == 1.0
    assert years_between(d(2020, 2, 29), d(2024, 2, 29)) == 4.0


def test_impossible_birth_dates_are_ignored():
    d = datetime.date
    assert years_between(d(2024, 1, 2), d(2024, 1, 1)) is None  # born after the study
    assert years_between(d(1800, 1, 1), d(2024, 1, 1)) is None  # older than anyone has lived


def test_header_rules():
    assert age_from_header({"PatientAge": "045Y", "PatientBirthDate": "20200101", "StudyDate": "20230101"}) == 45.0
    # Patient's Age missing or malformed: the birth date against the study date.
    assert age_from_header({"PatientAge": "??", "PatientBirthDate": "20200101", "StudyDate": "20230101"}) == 3.0
    # No study date: the acquisition date, then the content date.
    assert age_from_header({"PatientBirthDate": "20200101", "AcquisitionDate": "20220101"}) == 2.0
    assert age_from_header({"PatientBirthDate": "20200101", "StudyDate": "bad", "ContentDate": "20210101"}) == 1.0
    # A study date before the birth (a placeholder for an unknown date) is skipped like a malformed one:
    # the acquisition date still tells an adult's film, which the image gate might let through.
    placeholder = {"PatientBirthDate": "19800101", "StudyDate": "19000101", "AcquisitionDate": "20230101"}
    assert age_from_header(placeholder) == 43.0
    assert age_from_header({"PatientBirthDate": "20200101", "StudyDate": "00010101", "ContentDate": "20230101"}) == 3.0
    # A birth date with no date of the film says nothing about the age at the film.
    assert age_from_header({"PatientBirthDate": "20200101"}) is None
    assert age_from_header({}) is None
    assert age_from_header({"PatientAge": None, "PatientBirthDate": "garbage", "StudyDate": "20230101"}) is None


def test_a_zero_age_is_no_age():
    # Placeholders for an unknown patient: the image gate decides, not an age of 0.
    assert age_from_header({"PatientAge": "000Y"}) is None
    assert age_from_header({"PatientBirthDate": "20260101", "StudyDate": "20260101"}) is None
    # "000Y" says nothing, so a real birth date still counts.
    assert age_from_header({"PatientAge": "000Y", "PatientBirthDate": "19800101", "StudyDate": "20260101"}) == 46.0


def test_the_decoder_carries_the_age_and_nothing_else_of_the_header():
    image = decode(dicom(gradient(), extra={"PatientAge": "045Y"}))
    assert image.age_years == 45.0
    # The sample DICOMs carry a birth date (19800101) but no study date: no age.
    assert decode(dicom(gradient())).age_years is None
    by_birth = decode(dicom(gradient(), extra={"StudyDate": "20230615"}))
    assert by_birth.age_years == pytest.approx(43 + 165 / 365)
    shown = repr(by_birth.facts) + repr(by_birth.unknown_reason)
    for secret in (PATIENT["PatientBirthDate"], "20230615"):
        assert secret not in shown
    assert not {"PatientAge", "PatientBirthDate", "StudyDate"} & set(by_birth.facts)


# pydicom warns when the test WRITES these invalid values; reading them is silent.
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(
    "extra",
    [
        {"PatientAge": "abc"},
        {"PatientAge": "999Y"},
        {"PatientAge": ""},
        {"StudyDate": "2023"},
        {"PatientAge": "12345"},
        {"StudyDate": "20230230"},
    ],
)
def test_malformed_header_ages_decode_normally(extra):
    image = decode(dicom(gradient(), extra=extra))
    assert image.age_years is None and image.pixels.shape == (256, 256)


def test_an_age_element_with_the_wrong_vr_is_ignored():
    raw = dicom(gradient(), extra={"PatientAge": "045Y"})
    # Overwrite the value with bytes that are not an Age String at all (same length).
    broken = raw.replace(b"045Y", b"\xff\xfe\x00Y")
    assert decode(broken).age_years is None
