"""The patient's age from a DICOM header, in years, for the intended-use decision only.

DICOM carries it as Patient's Age (0010,1010), an Age String "nnnD", "nnnW", "nnnM" or "nnnY",
or implicitly as Patient's Birth Date (0010,0030) together with the date of the study,
acquisition or content. Headers are often filled in by hand or by odd software, so anything
that is not a plausible age is ignored (None), never an error. The age decides the answer and
is then dropped: it is never stored, logged or shown beyond the verdict's own sentence.
"""

from __future__ import annotations

import datetime
import re

_AGE_STRING = re.compile(r"([0-9]{1,3})\s*([DWMY])")
_DAYS_PER_YEAR = 365.25
_UNIT_YEARS = {"D": 1.0 / _DAYS_PER_YEAR, "W": 7.0 / _DAYS_PER_YEAR, "M": 1.0 / 12.0, "Y": 1.0}
# Older than anyone has lived: a typing error or a placeholder such as 999Y.
MAX_AGE_YEARS = 130.0
# Date elements in order of preference for "when was the film taken".
REFERENCE_DATE_KEYWORDS = ("StudyDate", "AcquisitionDate", "ContentDate")


def years_from_age_string(value) -> float | None:
    """'045Y' -> 45.0, '006M' -> 0.5, '010W' -> 0.19, '003D' -> 0.008; None if malformed or zero."""
    text = str(value if value is not None else "").strip().upper()
    match = _AGE_STRING.fullmatch(text)
    if not match:
        return None
    years = int(match.group(1)) * _UNIT_YEARS[match.group(2)]
    # "000Y" is what registration systems write for an unknown or emergency patient: no age at all.
    return years if 0 < years <= MAX_AGE_YEARS else None


def parse_date(value) -> datetime.date | None:
    """A DICOM DA value (YYYYMMDD; the old ACR-NEMA YYYY.MM.DD too), or None."""
    text = str(value if value is not None else "").strip().replace(".", "")
    if not re.fullmatch(r"[0-9]{8}", text):
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def years_between(birth: datetime.date, on: datetime.date) -> float | None:
    """Age on `on` of someone born on `birth`: whole years by birthday, plus the fraction of the
    current year; None if `on` precedes `birth` or the result is implausible."""
    if on < birth:
        return None
    whole = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    last_birthday = _anniversary(birth, birth.year + whole)
    next_birthday = _anniversary(birth, birth.year + whole + 1)
    years = whole + (on - last_birthday).days / (next_birthday - last_birthday).days
    return years if years <= MAX_AGE_YEARS else None


def _anniversary(birth: datetime.date, year: int) -> datetime.date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February in a common year: the birthday is taken as 1 March
        return datetime.date(year, 3, 1)


def age_from_header(elements: dict) -> float | None:
    """The age in years from header values keyed by DICOM keyword, or None. Patient's Age wins;
    otherwise the birth date against the first valid study, acquisition or content date (a date
    before the birth or more than 130 years after it is not valid). An age of
    exactly zero ("000Y", born on the study date) is no age: the image gate decides."""
    age = years_from_age_string(elements.get("PatientAge"))
    if age is not None:
        return age
    birth = parse_date(elements.get("PatientBirthDate"))
    if birth is None:
        return None
    for keyword in REFERENCE_DATE_KEYWORDS:
        on = parse_date(elements.get(keyword))
        years = None if on is None else years_between(birth, on)
        # A date before the birth (a placeholder such as 19000101 for an unknown study date) is as
        # malformed as an unreadable one: the next date is asked, not the image gate.
        if years is not None:
            # A birth date equal to the study's is a placeholder far more often than a newborn's film;
            # an age taken as 0 would also switch the adult gate off, so it is no age (the image decides).
            return years if years else None
    return None
