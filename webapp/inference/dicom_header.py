"""The DICOM header, read with bounds, and what it says about the film.

Only the elements the decoder uses are parsed (`NEEDED_TAGS`, pydicom's `specific_tags`): patient name,
ID and every other identifying element are never read into memory, let alone logged or returned. The
parse stops after the pixel data and refuses a header that takes more reads than any film's. Read from
it: the acquisition facts shown beside a verdict, the patient's age in years (the dates go no further),
and the modality, view or body part that rules out a frontal chest film.
"""

from __future__ import annotations

import io
import re

from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from .age import REFERENCE_DATE_KEYWORDS, age_from_header
from .dicom_frames import ITEM
from .image import (
    DecodeError,
)

# Non-identifying acquisition facts that may be shown next to a verdict.
_FACT_KEYWORDS = (
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "BitsStored",
    "PresentationIntentType",
)


_PIXEL_KEYWORDS = (
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "BitsAllocated",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "PlanarConfiguration",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PresentationLUTShape",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "FloatPixelPaddingValue",
    "FloatPixelPaddingRangeLimit",
    "DoubleFloatPixelPaddingValue",
    "DoubleFloatPixelPaddingRangeLimit",
)


_AGE_KEYWORDS = ("PatientAge", "PatientBirthDate", *REFERENCE_DATE_KEYWORDS)


# Elements longer than this (the pixel data, a long LUT) are read from the file only when used.
DEFER_BYTES = 64 * 1024


NEEDED_TAGS = [Tag(k) for k in _FACT_KEYWORDS + _PIXEL_KEYWORDS + _AGE_KEYWORDS] + [
    Tag(0x7FE0, 0x0010),  # Pixel Data
    Tag(0x7FE0, 0x0008),  # Float Pixel Data
    Tag(0x7FE0, 0x0009),  # Double Float Pixel Data
]


# Projection radiography: computed, digital and generic radiographs. Other modalities
# (CT, MR, US, NM, mammography...) decode fine but are never chest radiographs.
_RADIOGRAPHIC = {"CR", "DX", "RG", "DR", "OT", ""}


_MODALITY_NAMES = {
    "CT": "a CT slice",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an angiogram",
    "RF": "a fluoroscopy image",
    "IO": "an intra-oral dental radiograph",
    "PX": "a panoramic dental radiograph",
    "OP": "an ophthalmic photograph",
    "XC": "a photograph",
    "SM": "a microscopy slide",
}


# Lateral and oblique projections (DICOM View Position); AP, PA and decubitus are frontal.
_NOT_FRONTAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "RLO", "LLO", "RAO", "LAO", "RPO", "LPO"}


# Body Part Examined values that are certainly not the chest. Unusual chest labels
# ("PORT CHEST", "TORAX") must not be flagged, so only known other parts are listed.
_NOT_CHEST_PARTS = (
    "SKULL",
    "HEAD",
    "BRAIN",
    "SPINE",
    "NECK",
    "ABDOMEN",
    "PELVIS",
    "HIP",
    "KNEE",
    "LEG",
    "FOOT",
    "ANKLE",
    "HAND",
    "WRIST",
    "ELBOW",
    "ARM",
    "FEMUR",
    "HUMERUS",
    "BREAST",
    "JAW",
    "TEETH",
    "EXTREMITY",
)


# Encapsulated Pixel Data's header (undefined length; explicit VR OB/OW or implicit VR) and the
# Sequence Delimitation Item that ends its fragments.
_ENCAPSULATED_PIXEL_DATA = re.compile(rb"\xe0\x7f\x10\x00(?:O[BW]\x00\x00)?\xff\xff\xff\xff")


_SEQUENCE_END = b"\xfe\xff\xdd\xe0"


def cut_inside_encapsulated_pixels(data: bytes) -> bool:
    """Whether the file ends inside compressed pixel data, its fragments never closed: pydicom then gives
    back an empty data set, and a compressed film cut short in transfer was called a report without an image."""
    found = _ENCAPSULATED_PIXEL_DATA.search(data)
    return found is not None and data.find(_SEQUENCE_END, found.end()) < 0


# Pixel Data's header in explicit VR, little or big endian: OB or OW and the two reserved bytes.
_EXPLICIT_PIXEL_DATA = re.compile(rb"(?:\xe0\x7f\x10\x00|\x7f\xe0\x00\x10)O[BW]\x00\x00")


_IMPLICIT_PIXEL_DATA = b"\xe0\x7f\x10\x00"


def holds_unread_pixel_data(data: bytes) -> bool:
    """Whether the file holds a Pixel Data element that pydicom did not read: one malformed length before
    it (a single damaged byte) makes pydicom read the rest as other elements, and a film was called a
    report without an image. Implicit VR has no VR to match: its Pixel Data is the last element, and its
    length runs to the file's end."""
    if _EXPLICIT_PIXEL_DATA.search(data):
        return True
    at = data.rfind(_IMPLICIT_PIXEL_DATA)
    return at >= 0 and len(data) - at - 8 == int.from_bytes(data[at + 4 : at + 8], "little")


# Reads pydicom may make of the header (the elements before the pixel data): under 100 for a film. Each
# sequence item takes one or more and is parsed into Python objects, those of a sequence the decoder never
# asks for too (to find its end): a 1.7 MB upload of 200,000 empty items took 9 s and 140 MB, counted
# under 1 MB, and a 100,000-item VOI LUT Sequence 4.8 s (the 50 MB upload limit allows 30 times that).
HEADER_READS = 20_000


TOO_MANY_ELEMENTS = DecodeError(
    "corrupt_dicom",
    "The DICOM file's header holds far more elements than any radiograph's (sequences of many thousands "
    "of items); the file is damaged or forged.",
)


class HeaderReads(io.BytesIO):
    """The file for pydicom's parse: refused once the header has taken more reads than any film's. The pixel
    data's fragments are bounded apart (_MAX_FRAGMENTS), and nothing after the pixel data is parsed."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self._reads_left, self._in_header, self.exhausted = HEADER_READS, True, False

    def at_element(self, tag, vr, length) -> bool:
        """read_partial's stop_when, called with each top-level element: stop after the pixel data."""
        if tag >= 0x7FE00008:  # Float, Double Float or (integer) Pixel Data
            self._in_header = False
        return tag > 0x7FE00010

    def read(self, size: int | None = -1, /) -> bytes:
        if self._in_header:
            self._reads_left -= 1
            if self._reads_left < 0:
                self.exhausted = True
                raise TOO_MANY_ELEMENTS
        return super().read(size)


# Only the first item of a LUT sequence is applied; a film has one Modality LUT and a few VOI LUTs
# (presets). A defined-length sequence is left unparsed by the header's read and parsed whole when first
# used: 100,000 VOI LUT items took 4.8 s.
_MAX_LUT_ITEMS = 64


def refuse_long_lut_sequences(ds, data: bytes) -> None:
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        element = ds.get_item(keyword, keep_deferred=True) if keyword in ds else None
        if isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF:
            # Unparsed (and over 64 KB, unread): its item headers are counted in the file.
            item = ITEM if element.is_little_endian else b"\xff\xfe\xe0\x00"
            items = data.count(item, element.value_tell, element.value_tell + element.length)
        else:
            items = len(element.value or ()) if element is not None else 0
        if items > _MAX_LUT_ITEMS:
            raise TOO_MANY_ELEMENTS


def acquisition_facts(ds, tsyntax) -> dict[str, str]:
    facts = {}
    for keyword in _FACT_KEYWORDS:
        value = ds.get(keyword)
        text = "".join(ch for ch in str(value if value is not None else "") if ch.isprintable())
        if text.strip():
            facts[keyword] = text.strip()[:64]
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        facts["NumberOfFrames"] = f"{int(frames)} (first frame shown)"
    facts["TransferSyntax"] = str(getattr(tsyntax, "name", tsyntax))[:64]
    return facts


def patient_age(ds) -> float | None:
    """The patient's age in years, or None when absent or malformed (never an error)."""
    values = {}
    for keyword in _AGE_KEYWORDS:
        try:
            values[keyword] = ds.get(keyword)
        except Exception:  # noqa: BLE001  a value pydicom cannot convert is simply no value
            values[keyword] = None
    return age_from_header(values)


def modality_reason(facts: dict[str, str]) -> str | None:
    """What the file itself says that rules out a frontal chest radiograph."""
    modality = facts.get("Modality", "").upper()
    if modality not in _RADIOGRAPHIC:
        what = _MODALITY_NAMES.get(modality, f"a {modality} image")
        return f"The DICOM file is {what} (modality {modality}), not a projection chest radiograph."
    view = facts.get("ViewPosition", "").upper()
    if view in _NOT_FRONTAL_VIEWS:
        return (
            f"The DICOM file is a {view} (lateral or oblique) view; the model reads frontal (PA/AP) chest films only."
        )
    if facts.get("PresentationIntentType", "").upper() == "FOR PROCESSING":
        # The detector's raw data: the vendor's processing has not yet made a film of it.
        return (
            "The DICOM file is a raw detector image (For Processing); the model reads films prepared "
            "for reading (For Presentation)."
        )
    body_part = facts.get("BodyPartExamined", "").upper()
    if any(part in body_part for part in _NOT_CHEST_PARTS):
        return f"The DICOM file is a radiograph of the {body_part.lower()}, not of the chest."
    return None
