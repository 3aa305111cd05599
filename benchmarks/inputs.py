"""The files the benchmark uploads, made at run time from a real radiograph in the test fixtures.

Nothing binary is committed: the large JPEG, the 16-bit PNG and the DICOM are built from
tests/fixtures/images/pneumonia.jpeg with Pillow and pydicom, the malformed files from its bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"
SOURCE = FIXTURES / "pneumonia.jpeg"
DIGITAL_XRAY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
# Detector-sized exports: what a PACS or a flat-panel workstation actually sends.
LARGE_SIDE = 3000
HIGH_BIT_SIDE = 2048


@dataclass(frozen=True)
class Upload:
    name: str  # short key used in tables
    filename: str  # what the client sends as the multipart file name
    data: bytes
    description: str
    expect: str  # "ok" (a verdict), "unknown" (a verdict of UNKNOWN expected), "refused" (4xx)


def _grey(path: Path) -> Image.Image:
    return Image.open(path).convert("L")


def _upscaled(side: int) -> Image.Image:
    return _grey(SOURCE).resize((side, side), Image.Resampling.LANCZOS)


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _twelve_bit(side: int) -> np.ndarray:
    """The radiograph as a 12-bit detector image (0..4095) in 16-bit words."""
    values = np.asarray(_upscaled(side), dtype=np.float32) / 255.0
    return np.rint(values * 4095).astype(np.uint16)


def _dicom(pixels: np.ndarray) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = "Benchmark^Synthetic"
    ds.PatientID = "BENCH-0001"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def latency_inputs() -> list[Upload]:
    """One upload per input kind the latency table reports, all of the same film."""
    small = _save(_grey(SOURCE), "JPEG", quality=95)
    large = _save(_upscaled(LARGE_SIDE), "JPEG", quality=90)
    twelve_bit = _twelve_bit(HIGH_BIT_SIDE)
    png16 = _save(Image.fromarray(twelve_bit), "PNG")
    dicom = _dicom(twelve_bit)
    return [
        Upload("jpeg_224", "cxr_224.jpg", small, "JPEG 224x224, 8-bit", "ok"),
        Upload("jpeg_3000", "cxr_3000.jpg", large, f"JPEG {LARGE_SIDE}x{LARGE_SIDE}, 8-bit", "ok"),
        Upload("png16", "cxr_16bit.png", png16, f"PNG {HIGH_BIT_SIDE}x{HIGH_BIT_SIDE}, 16-bit (12-bit data)", "ok"),
        Upload("dicom", "cxr.dcm", dicom, f"DICOM DX {HIGH_BIT_SIDE}x{HIGH_BIT_SIDE}, 12-bit, uncompressed", "ok"),
    ]


def load_mix(latency: list[Upload]) -> list[tuple[Upload, int]]:
    """(upload, weight) for the load test: mostly films, some non-chest images, some broken files."""
    normal = (FIXTURES / "normal.jpeg").read_bytes()
    by_name = {u.name: u for u in latency}
    films = [
        (Upload("normal", "normal.jpeg", normal, "chest film (NORMAL fixture)", "ok"), 20),
        (Upload("pneumonia", "pneumonia.jpeg", SOURCE.read_bytes(), "chest film (PNEUMONIA fixture)", "ok"), 20),
        (by_name["jpeg_3000"], 8),
        (by_name["png16"], 6),
        (by_name["dicom"], 6),
    ]
    not_chest = [
        (Upload("photo", "photo.jpg", (FIXTURES / "photo.jpg").read_bytes(), "colour photograph", "unknown"), 10),
        (Upload("knee", "knee.jpg", (FIXTURES / "knee.jpg").read_bytes(), "knee radiograph", "unknown"), 10),
    ]
    broken = [
        (Upload("truncated", "truncated.jpg", normal[: len(normal) // 2], "JPEG cut in half", "refused"), 7),
        (
            Upload(
                "pdf",
                "report.jpg",
                b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
                "PDF bytes behind a .jpg name",
                "refused",
            ),
            7,
        ),
        (Upload("empty", "empty.png", b"", "empty file", "refused"), 6),
    ]
    return films + not_chest + broken
