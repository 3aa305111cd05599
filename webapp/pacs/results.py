"""What goes back to the PACS for one screened film, both in new series of the film's own study and both
carrying its Patient and Study modules (copied from the received dataset, in memory only):

- a Comprehensive SR, TID 1500 measurement report (highdicom): a measurement group referencing the
  film's SOP instance, with the verdict as a qualitative evaluation (a code) and as a TEXT item whose
  value is exactly the API's verdict word, the calibrated probability and the threshold as numbers, the
  UNKNOWN reason, the caution, the model version and the intended-use statement as TEXT;
- a Secondary Capture of the film with the heat map over it and "AI RESULT - NOT FOR DIAGNOSTIC USE"
  burned into the pixels, so no viewer can show it without the warning.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import DataElement, Dataset, dcmwrite
from pydicom.datadict import dictionary_VR
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import TM

from ..inference.age import parse_date
from ..inference.decide import threshold_text
from ..inference.labels import NORMAL, PNEUMONIA, UNKNOWN
from ..inference.overlay import overlay_rgb
from ..inference.scores import rounded
from ..notes import INTENDED_USE

# highdicom logs the UIDs of the datasets it copies from at INFO: UIDs identify a patient's study.
logging.getLogger("highdicom").setLevel(logging.WARNING)

MANUFACTURER = "CXR Screen"
BANNER = "AI RESULT - NOT FOR DIAGNOSTIC USE"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
# Our own coding scheme for the concepts no standard code names (PS3.16 8.2: private schemes start 99),
# declared in each SR's Coding Scheme Identification Sequence (PS3.3 C.12.1.1.4) with its name and who
# answers for it: a receiving system, or a reader of the SR, learns what "99CXRSCREEN" is from the
# object itself (until 5 December it was used undeclared).
SCHEME = "99CXRSCREEN"
SCHEME_DECLARATION = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator=SCHEME, name="CXR Screen AI screening concepts", responsible_organization=MANUFACTURER
)
VERDICT_CONCEPT = Code("VERDICT", SCHEME, "AI screening verdict")
PROBABILITY_CONCEPT = Code("P-PNEUMONIA", SCHEME, "Calibrated probability of pneumonia")
THRESHOLD_CONCEPT = Code("THRESHOLD", SCHEME, "Decision threshold")
REASON_CONCEPT = Code("UNKNOWN-REASON", SCHEME, "Reason for UNKNOWN")
VERSION_CONCEPT = Code("MODEL-VERSION", SCHEME, "Model version")
INTENDED_USE_CONCEPT = Code("INTENDED-USE", SCHEME, "Intended use")
DISCLAIMER_CONCEPT = Code("DISCLAIMER", SCHEME, "Disclaimer")
CAUTION_CONCEPT = Code("CAUTION", SCHEME, "Caution")
VERDICT_CODES = {
    PNEUMONIA: Code("233604007", "SCT", "Pneumonia"),
    NORMAL: Code("17621005", "SCT", "Normal"),
    UNKNOWN: Code("82334004", "SCT", "Indeterminate"),
}
CHEST_RADIOGRAPH = Code("399208008", "SCT", "Plain chest X-ray")
UNITLESS = Code("1", "UCUM", "no units")

# The Patient, Patient Study and General Study modules' attributes a result copies from its film.
PATIENT_AND_STUDY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
)


class MissingIdentifier(ValueError):
    """The film lacks a UID its results must reference. Its message names the element, never a value,
    so the outbox can show it: "(KeyError)" told the administrator nothing."""


@dataclass(frozen=True)
class Verdict:
    label: str
    p_pneumonia: float
    threshold: float
    unknown_reason: str | None
    model_version: str
    # A warning that comes with an answered verdict (a header age outside the validated range): the
    # PACS reader gets it as the result page's reader does.
    caution: str | None = None


def build_sr(source: Dataset, verdict: Verdict, device_uid: str) -> Dataset:
    """`device_uid`: the installation's Device Observer UID (device.py), the same in every report."""
    film_elements = _patient_and_study(source)
    reference = _reference(source)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=MANUFACTURER, model_name=verdict.model_version[:64]
        ),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="AI screening result"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=verdict.model_version[:64]),
        measurements=[
            hd.sr.Measurement(name=PROBABILITY_CONCEPT, value=rounded(verdict.p_pneumonia), unit=UNITLESS),
            hd.sr.Measurement(name=THRESHOLD_CONCEPT, value=rounded(verdict.threshold), unit=UNITLESS),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(VERDICT_CONCEPT, VERDICT_CODES[verdict.label])],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=reference.SOPClassUID, referenced_sop_instance_uid=reference.SOPInstanceUID
            )
        ],
    )
    texts = [
        (VERDICT_CONCEPT, verdict.label),
        (REASON_CONCEPT, verdict.unknown_reason or "none"),
        (CAUTION_CONCEPT, verdict.caution or "none"),
        (VERSION_CONCEPT, verdict.model_version),
        (INTENDED_USE_CONCEPT, INTENDED_USE),
        (DISCLAIMER_CONCEPT, BANNER),
    ]
    # TID 1501 has no TEXT rows; Comprehensive SR allows them, and a reader wants the plain word.
    container = group[0]
    for concept, value in texts:
        container.ContentSequence.append(hd.sr.TextContentItem(concept, value, relationship_type="CONTAINS"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CHEST_RADIOGRAPH,
        imaging_measurements=[group],
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[reference],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"{MANUFACTURER} AI result (SR) - not for diagnostic use",
        coding_schemes=[SCHEME_DECLARATION],
    )
    return _with(sr, film_elements)


# A Code String as PS3.5 defines it (upper case, digits, space, underscore; 16 at most): a film's
# value outside it (lower case, say) is normalised or left out, never copied into an invalid result.
_BODY_PART = re.compile(r"[A-Z0-9_ ]{1,16}")


def build_capture(source: Dataset, verdict: Verdict, pixels: np.ndarray, heatmap: np.ndarray) -> Dataset:
    """`pixels`: the film as decoded, grey in [0, 1] at the size to show; `heatmap`: the model's map."""
    film_elements = _patient_and_study(source)
    reference = _reference(source)
    rgb = _with_banner(overlay_rgb(pixels, heatmap), verdict)
    capture = hd.sc.SCImage(
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=reference.StudyInstanceUID,
        series_instance_uid=generate_uid(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),  # replaced below by the film's own (or left empty, Type 2)
        series_description=f"{MANUFACTURER} AI heat map - not for diagnostic use",
    )
    capture.PatientOrientation = source.get("PatientOrientation", "")
    _with_anatomy(capture, source)
    capture.BurnedInAnnotation = "YES"
    if str(source.get("LossyImageCompression", "")).strip() == "01":
        # Made from a film that went through lossy compression: PS3.3 C.7.6.1.1.5, once 01 never reset,
        # so a viewer keeps flagging the capture as lossy (highdicom leaves it out).
        capture.LossyImageCompression = "01"
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.DerivationDescription = f"{BANNER}: AI heat map over the film ({verdict.label})"
    source_image = Dataset()
    source_image.ReferencedSOPClassUID = reference.SOPClassUID
    source_image.ReferencedSOPInstanceUID = reference.SOPInstanceUID
    capture.SourceImageSequence = [source_image]
    return _with(capture, film_elements)


def _with_anatomy(capture: Dataset, source: Dataset) -> None:
    """The film's anatomy on its capture: its body part (CHEST), its coded Anatomic Region (what a DX film
    must give, PS3.3 C.8.11.5, where Body Part Examined is optional) and its laterality. Laterality is
    Type 2C, required for a paired body part: without the film's anatomy it cannot be judged absent with
    reason, and dciodvfy flagged the capture of every film that gave none as missing it (until 5 December
    the Anatomic Region was dropped, so a DX chest film without Body Part Examined drew that error). A
    film that names no anatomy at all gives a capture that names none either: nothing is invented."""
    body_part = str(source.get("BodyPartExamined", "")).strip().upper()
    if _BODY_PART.fullmatch(body_part):
        capture.BodyPartExamined = body_part
    regions = [_code(item) for item in source.get("AnatomicRegionSequence", None) or []]
    if regions and all(regions):
        capture.AnatomicRegionSequence = regions
    # Laterality takes R or L; a DX film says it as Image Laterality (also U, unpaired, or B, both).
    for keyword in ("Laterality", "ImageLaterality"):
        laterality = str(source.get(keyword, "")).strip().upper()
        if laterality in ("R", "L"):
            capture.Laterality = laterality
            break


def _code(item: Dataset) -> Dataset | None:
    """A Code Sequence item of the film reduced to its code (value, scheme, meaning); None when one is
    missing, so that a malformed item is never copied into the result."""
    code = Dataset()
    for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
        value = str(item.get(keyword, "")).strip()
        if not value:
            return None
        setattr(code, keyword, value)
    return code


def encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _reference(source: Dataset) -> Dataset:
    """The attributes of the film the builders read, with empty values where an optional one is missing.

    highdicom checks them strictly, and real headers often fail: sex "U" or "MALE", a time written
    "10:10:10", a date "1980-01-02" or a year alone. Such a value is normalised when its meaning is
    plain, else left out here; the result still carries the film's own elements as they came
    (_patient_and_study), so it files with its film in the PACS."""
    reference = Dataset()
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        setattr(reference, keyword, source.get(keyword, None) or None)
    reference.PatientSex = _sex(source.get("PatientSex", None))
    reference.PatientBirthDate = _date(source.get("PatientBirthDate", None))
    reference.StudyDate = _date(source.get("StudyDate", None))
    reference.StudyTime = _time(source.get("StudyTime", None))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID"):
        if not source.get(keyword):
            raise MissingIdentifier(f"the film has no {keyword}")
        setattr(reference, keyword, source[keyword].value)
    # No Specific Character Set: the values above are already decoded, and highdicom refuses common
    # ones ("\\ISO 2022 IR 87", a lone "ISO 2022 IR 100"); the film's own is copied onto the result.
    return reference


def _sex(value) -> str | None:
    """M, F or O (PS3.3 C.7.1.1); "male", "F ", "OTHER" read as meant, anything else (U...) left out."""
    text = str(value or "").strip().upper()
    return {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}.get(text)


def _date(value) -> str | None:
    """YYYYMMDD, from that or from YYYY-MM-DD / YYYY.MM.DD; None for a partial or impossible date."""
    day = parse_date(str(value or "").replace("-", ""))
    return day.strftime("%Y%m%d") if day else None


def _time(value) -> str | None:
    """HHMMSS.FFFFFF or a leading part of it, from that or from HH:MM:SS; None if not a time."""
    text = str(value or "").strip().replace(":", "")
    try:
        return str(TM(text)) if re.fullmatch(r"[0-9]{2,6}(\.[0-9]{1,6})?", text) else None
    except ValueError:
        return None


def _patient_and_study(source: Dataset) -> list[DataElement]:
    """The film's Patient and Study elements as the modality wrote them. Text is copied as its bytes,
    never decoded and encoded again: a film whose bytes do not fit its declared character set (ISO_IR
    192 declared, Latin-1 written: a common misconfiguration) gave results whose name had U+FFFD for each
    such letter (the film's bytes, decoded with replacement, then encoded): another patient name than
    the film's to a PACS that reconciles names. Every copied element but the sequences is text, whose
    bytes do not depend on the byte order.

    Called before anything else reads the source: reading an element decodes it in place."""
    elements = []
    for keyword in PATIENT_AND_STUDY:
        if keyword not in source:
            continue
        element = source.get_item(keyword)
        vr = dictionary_VR(element.tag)
        raw = element.is_raw and vr != "SQ" and isinstance(element.value, bytes)
        elements.append(DataElement(element.tag, vr, element.value) if raw else source[keyword])
    return elements


def _with(result: Dataset, elements: list[DataElement]) -> Dataset:
    for element in elements:
        result[element.tag] = element
    return result


def _with_banner(rgb: np.ndarray, verdict: Verdict) -> np.ndarray:
    """The warning across the top and the verdict across the bottom, in bands that cover the film."""
    image = Image.fromarray(rgb, mode="RGB")
    height = image.height
    draw = ImageDraw.Draw(image)
    lines = summary_lines(verdict)
    size = max(8, height // 28)
    font = ImageFont.load_default(size=size)
    # The whole warning must fit across the image, however narrow.
    while size > 8 and max(draw.textlength(t, font=font) for t in (BANNER, *lines)) > image.width - size:
        size -= 1
        font = ImageFont.load_default(size=size)
    band = int(size * 1.8)
    draw.rectangle([0, 0, image.width, band], fill=(0, 0, 0))
    draw.text((size // 2, (band - size) // 2), BANNER, fill=(255, 220, 0), font=font)
    top = height - band * len(lines)
    draw.rectangle([0, top, image.width, height], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        colour = (255, 255, 255) if i == 0 else (255, 220, 0)
        draw.text((size // 2, top + i * band + (band - size) // 2), line, fill=colour, font=font)
    return np.asarray(image)


def summary_lines(verdict: Verdict) -> list[str]:
    """The text burned in at the bottom: the verdict, then the caution's headline when there is one.

    An UNKNOWN film gets its reason's headline instead of the score: the score is no reading of such a
    film (an adult's, another body part), which is why the result page folds it away and the CSV
    export leaves it empty; burned into an image, it could not be folded."""
    if verdict.label == UNKNOWN:
        headline = (verdict.unknown_reason or "no reason given").split(":", 1)[0].strip().rstrip(".")
        lines = [f"UNKNOWN  {headline[:80]}"]
    else:
        threshold = threshold_text(verdict.threshold)
        lines = [f"{verdict.label}  p(pneumonia) {verdict.p_pneumonia:.2f}  threshold {threshold}"]
    if verdict.caution:
        lines.append(f"CAUTION: {verdict.caution.split(':', 1)[0]}")
    return lines
