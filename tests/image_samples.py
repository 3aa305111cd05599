"""Valid files of every accepted kind, built in memory with Pillow and pydicom.

Shared by the decode tests, the round-trip test, the hostile corpus (which damages
these) and the fuzz target (which starts from them). Nothing here is committed as a
binary: every file is made from a pixel array when a test asks for it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# Identifying values planted in every generated DICOM, so tests can prove they never
# come out of the decoder.
PATIENT = {
    "PatientName": "Doe^Jane^Identifiable",
    "PatientID": "MRN-0042-SECRET",
    "PatientBirthDate": "19800101",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC-777-SECRET",
}
DIGITAL_XRAY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def gradient(width: int = 256, height: int = 256, levels: int = 256) -> np.ndarray:
    """A smooth 2-D test pattern with a bright disc: values 0..levels-1, no flat areas."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x / max(width - 1, 1)) * 0.6 + (y / max(height - 1, 1)) * 0.3
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 4) ** 2
    values = np.clip(base + 0.1 * disc, 0, 1) * (levels - 1)
    return np.rint(values).astype(np.uint16 if levels > 256 else np.uint8)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(pixels: np.ndarray | None = None, quality: int = 95, **params) -> bytes:
    pixels = gradient() if pixels is None else pixels
    return encode(Image.fromarray(pixels), "JPEG", quality=quality, **params)


def png(pixels: np.ndarray | None = None, **params) -> bytes:
    pixels = gradient() if pixels is None else pixels
    return encode(Image.fromarray(pixels), "PNG", **params)


def valid_samples() -> dict[str, bytes]:
    """One small valid file per accepted kind and variant, keyed by a readable name."""
    grey = gradient()
    rgb = Image.fromarray(grey).convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(200)
    samples = {
        "gray.jpg": jpeg(grey),
        "rgb.jpg": encode(rgb, "JPEG", quality=95),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "progressive.jpg": jpeg(grey, progressive=True),
        "gray.png": png(grey),
        "gray16.png": png(gradient(levels=65536)),
        "palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "la.png": encode(rgba.convert("LA"), "PNG"),
        "bilevel.png": encode(Image.fromarray(grey).convert("1"), "PNG"),
        "gray.bmp": encode(Image.fromarray(grey), "BMP"),
        "rgb.bmp": encode(rgb, "BMP"),
        "gray.tiff": encode(Image.fromarray(grey), "TIFF"),
        "gray16.tiff": encode(Image.fromarray(gradient(levels=65536)), "TIFF"),
        "lzw.tiff": encode(rgb, "TIFF", compression="tiff_lzw"),
        "gray.webp": encode(rgb, "WEBP", lossless=True),
        "mono2.dcm": dicom(gradient(levels=4096), bits_stored=12),
        "mono1.dcm": dicom(4095 - gradient(levels=4096), bits_stored=12, photometric="MONOCHROME1"),
        "jpeg.dcm": dicom_jpeg(grey),
        "rle.dcm": dicom(gradient(levels=4096), bits_stored=12, transfer_syntax=RLELossless),
    }
    return samples


def dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    bits_stored: int | None = None,
    signed: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    with_pixels: bool = True,
    extra: dict | None = None,
) -> bytes:
    """A DICOM file (with preamble and file meta) holding `pixels`: (H, W) gray,
    (frames, H, W) multi-frame gray or (H, W, 3) RGB."""
    ds = _base_dataset(modality, extra)
    if with_pixels:
        _set_pixels(ds, pixels, photometric, bits_stored, signed)
        if slope is not None:
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if voi_lut is not None:
            item = Dataset()
            item.add_new("LUTDescriptor", "US", [len(voi_lut), 0, 16])
            item.add_new("LUTData", "US", [int(v) for v in voi_lut])
            ds.VOILUTSequence = [item]
    if UID(transfer_syntax).is_compressed:
        ds.compress(transfer_syntax)  # also sets the file meta's transfer syntax
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax  # e.g. deflated: applied on writing
    return _write(ds)


def float_film(pixels: np.ndarray, double: bool = False, **extra) -> bytes:
    """A CR film in Float Pixel Data (float32) or Double Float Pixel Data (float64), which have no Bits
    Stored, High Bit or Pixel Representation; `extra` sets further elements (a rescale, a window...)."""
    ds = _base_dataset("CR", extra)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = ds.get("PhotometricInterpretation", "MONOCHROME2")  # unless `extra` set it
    ds.BitsAllocated = 64 if double else 32
    data = np.ascontiguousarray(pixels, dtype=np.float64 if double else np.float32).tobytes()
    if double:
        ds.DoubleFloatPixelData = data
    else:
        ds.FloatPixelData = data
    return _write(ds)


def dicom_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """An 8-bit JPEG Baseline DICOM, the commonest compressed PACS export: a Pillow
    JPEG encapsulated as the single fragment of the Pixel Data."""
    ds = _base_dataset("CR", None)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([jpeg(pixels, quality=quality)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return _write(ds)


def _base_dataset(modality: str, extra: dict | None) -> Dataset:
    ds = Dataset()
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = DIGITAL_XRAY_STORAGE if modality in ("DX", "CR") else SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored, signed) -> None:
    pixels = np.ascontiguousarray(pixels)
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    if pixels.ndim == 3 and not colour:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    allocated = pixels.dtype.itemsize * 8
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
