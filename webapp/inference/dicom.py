"""DICOM files to `DecodedImage`: the grey values a radiologist's viewer would show.

Only the elements listed in `_NEEDED_TAGS` are ever parsed (pydicom's
`specific_tags`), so patient name, ID and every other identifying element are never
read into memory, let alone logged or returned. The age elements (Patient's Age, or Birth
Date with the study date) are read only to compute an age in years for the intended-use
decision (`age.py`); the dates themselves go no further than that. The pixel
pipeline is the standard one, in the standard order: Modality LUT (or rescale
slope/intercept), then VOI LUT (or window), then MONOCHROME1 inversion.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from collections.abc import Sequence
from importlib.util import find_spec

import numpy as np
from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_file_meta_info, read_partial, read_preamble
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, convert_color_space, get_decoder, pixel_array
from pydicom.pixels.utils import _array_common
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from .age import REFERENCE_DATE_KEYWORDS, age_from_header
from .image import (
    MB,
    DecodedImage,
    DecodeError,
    as_scaled_to_unit,
    check_dimensions,
    check_memory,
    scale_to_unit,
    scale_with,
    scaling_extremes,
    shrink,
)
from .structure import check_entropy_data, check_jpeg


def keep_header_values_out_of_logs() -> None:
    """pydicom reports a malformed value by quoting it, in a log record ("pydicom" logger) and a
    warning: "Invalid value for VR UI: '1.2...'" puts a study's UID, a birth date or a name in the
    logs of whichever process read it. Values are not validated on reading or writing (the node
    passes headers on as the modality wrote them; the decoder checks what it uses itself), and what
    pydicom still says is kept from the logs. Called at import here and by the DICOM node."""
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


keep_header_values_out_of_logs()


def _decodable_transfer_syntaxes() -> tuple[UID, ...]:
    """The transfer syntaxes decode_dicom() reads here: those for which pydicom has an installed pixel
    decoder (its own for uncompressed and RLE; pylibjpeg, pyjpegls or Pillow for the JPEG family), less
    deflated, which is refused before pydicom would inflate it without bound, and less JPEG 2000 when
    pylibjpeg-openjpeg, the JPEG 2000 decoder tested here, is missing. The DICOM node accepts a
    film to be screened in these only (pacs/listener.py): one it could not decode is refused at
    association, where the sender can send it again in another syntax, not after Success."""
    decodable = []
    for uid in AllTransferSyntaxes:
        if uid == DeflatedExplicitVRLittleEndian or (uid in JPEG2000TransferSyntaxes and not find_spec("openjpeg")):
            continue
        try:
            available = get_decoder(uid).is_available
        except NotImplementedError:  # MPEG, HEVC, JPEG XL, JPIP...: pydicom has no decoder at all
            continue
        if available:
            decodable.append(uid)
    return tuple(decodable)


DECODABLE_TRANSFER_SYNTAXES = _decodable_transfer_syntaxes()

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
_DEFER_BYTES = 64 * 1024
_NEEDED_TAGS = [Tag(k) for k in _FACT_KEYWORDS + _PIXEL_KEYWORDS + _AGE_KEYWORDS] + [
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


def decode_dicom(
    data: bytes, *, target_size: int | None = None, memory_mb: int | None = None, copied_bytes: int = 0
) -> DecodedImage:
    """`copied_bytes`: memory the caller spent on the file for this decode (decode() copies a file to
    give it back its preamble), counted with the decode's own."""
    deflated, header = False, _HeaderReads(data)
    try:
        stream = io.BytesIO(data)
        read_preamble(stream, False)
        # Read alone, before the data set: pydicom inflates a deflated data set whole as it reads it, without
        # bound (a 500 KB upload inflated to 1 GB in 4.6 s when this refusal came after the read).
        deflated = _read_file_meta_info(stream).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if not deflated:
            # The pixels stay in `data` until the one frame needed is read from it: parsed with the header, a
            # multi-frame film's every frame was copied (a 20-frame 1000 x 1000 film peaked at 42 MB, counted 15).
            ds = read_partial(header, header.at_element, defer_size=_DEFER_BYTES, specific_tags=_NEEDED_TAGS)
    except Exception as exc:  # noqa: BLE001  any parse failure is a damaged file
        # pydicom reports the read limit as "no tag to read" (an OSError): it is named here.
        raise (_TOO_MANY_ELEMENTS if header.exhausted else _corrupt()) from exc
    if deflated:
        raise DecodeError(
            "unsupported_dicom",
            "Deflated DICOM is not accepted; export the image uncompressed or JPEG-compressed.",
        )
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise _corrupt()
    _refuse_long_lut_sequences(ds, data)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _cut_inside_encapsulated_pixels(data):
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file is incomplete: it ends inside its compressed image (the file was cut short); "
                "the file is damaged.",
            )
        if _holds_unread_pixel_data(data):
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file holds an image, but an element before it is damaged (its length or value is "
                "malformed), so the image cannot be read.",
            )
        raise DecodeError(
            "dicom_no_pixel_data",
            "The DICOM file has no image in it (it may be a report or a structured document).",
        )
    if tsyntax not in DECODABLE_TRANSFER_SYNTAXES:
        raise undecodable_syntax()
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    check_dimensions(columns, rows)
    # One frame is decoded: its samples at the allocated width three times (the file's copy, the frame,
    # its bits shifted down) beside float32 grey levels, and for grey films the grey-level table's
    # int32 index: peaks measured at 10, 11 and 13 bytes a pixel for 16-bit, 8-bit and 8-bit RGB films
    # (docs/security.md), counted as 3 x the samples' bytes + 4, and at least 11. Plus what the
    # allocator keeps of freed steps: arrays under glibc's 32 MB mmap threshold come from its heap,
    # which does not give all of them back (a 2000 x 2000 16-bit film: 14 bytes a pixel).
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    pixels = columns * rows
    per_pixel = max(3 * samples * max(1, (bits + 7) // 8) + 4, 11)
    # A compressed frame is read whole before the codec sees it, piece by piece (about 120 bytes of
    # Python objects a fragment, in pydicom and again in its decoder), beside the samples it decodes to.
    compressed, pieces = _first_frame_extent(_at_pixel_data(ds, data), ds) if tsyntax.is_encapsulated else (0, 0)
    held = pixels * per_pixel + min(4 * pixels, 32 * MB) + copied_bytes + compressed + 256 * pieces
    check_memory(columns, rows, held, memory_mb)
    if tsyntax.is_encapsulated:
        # What the codec sets up from the frame's header beyond the samples (JPEG 2000: its tiles).
        check_memory(columns, rows, held + _check_frame_header(ds, data, tsyntax, rows, columns), memory_mb)

    _check_rescale(ds)
    try:
        frame, colour_space = _first_frame(data, tsyntax, samples, _high_bit_layout(ds, tsyntax, samples))
    except NotImplementedError as exc:
        if tsyntax.is_compressed:
            raise  # a codec that is not installed: decode() names it
        raise DecodeError(
            "unsupported_dicom",
            f"The DICOM image stores its samples in {bits}-bit words, which cannot be read; "
            "export it with 8 or 16 bits allocated.",
        ) from exc
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        # NaN or infinity in Float Pixel Data would turn every grey level downstream into NaN.
        raise DecodeError(
            "corrupt_dicom",
            "The DICOM file's image holds invalid pixel values (not a number or infinite); the file is damaged.",
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    facts = _facts(ds, tsyntax)
    colourfulness = 0.0
    if frame.ndim == 3:
        # Colour DICOM (RGB, or YBR that pydicom has already converted to RGB).
        pixels, colourfulness = _grey_from_colour(frame, colour_space)
    elif frame.ndim == 2 and photometric in ("MONOCHROME1", "MONOCHROME2", ""):
        try:
            pixels = _grey_levels(frame, ds)
        except DecodeError:
            raise  # a ValueError too, but one that says what it is
        except _LUT_ERRORS as exc:
            # pydicom's errors for a table that cannot be applied: its descriptor names an entry size
            # there is no type for (0 or 40 bits, said to be an unsupported compression before), it
            # holds fewer entries than it declares, or it is missing; or a Modality LUT on float data.
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file's Modality LUT or VOI LUT (or window) cannot be applied to its image: "
                "the table or its descriptor is malformed; the file is damaged.",
            ) from exc
        # MONOCHROME1 shows high values dark, and so does MONOCHROME2 with an INVERSE Presentation LUT
        # Shape (a viewer inverts it). The DX IOD pairs MONOCHROME1 with INVERSE: one inversion, not two.
        inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
        if photometric == "MONOCHROME1" or inverse:
            np.subtract(1.0, pixels, out=pixels)
    else:
        raise DecodeError(
            "unsupported_dicom",
            f"DICOM images with photometric interpretation {photometric or 'unknown'} are not supported.",
        )
    # In place from here on: each full-size float copy of a 4300 x 4300 film is 70 MB (the peak was
    # 305 MB with three of them; see docs/security.md, "Memory budget per decode").
    del frame
    pixels = pixels.astype(np.float32, copy=False)
    pixels = shrink(np.clip(pixels, 0.0, 1.0, out=pixels), target_size)
    return DecodedImage(pixels, "DICOM", columns, rows, colourfulness, facts, _modality_reason(facts), _age(ds))


# Encapsulated Pixel Data's header (undefined length; explicit VR OB/OW or implicit VR) and the
# Sequence Delimitation Item that ends its fragments.
_ENCAPSULATED_PIXEL_DATA = re.compile(rb"\xe0\x7f\x10\x00(?:O[BW]\x00\x00)?\xff\xff\xff\xff")
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"


def _cut_inside_encapsulated_pixels(data: bytes) -> bool:
    """Whether the file ends inside compressed pixel data, its fragments never closed: pydicom then gives
    back an empty data set, and a compressed film cut short in transfer was called a report without an image."""
    found = _ENCAPSULATED_PIXEL_DATA.search(data)
    return found is not None and data.find(_SEQUENCE_END, found.end()) < 0


# Pixel Data's header in explicit VR, little or big endian: OB or OW and the two reserved bytes.
_EXPLICIT_PIXEL_DATA = re.compile(rb"(?:\xe0\x7f\x10\x00|\x7f\xe0\x00\x10)O[BW]\x00\x00")
_IMPLICIT_PIXEL_DATA = b"\xe0\x7f\x10\x00"


def _holds_unread_pixel_data(data: bytes) -> bool:
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
_HEADER_READS = 20_000
_TOO_MANY_ELEMENTS = DecodeError(
    "corrupt_dicom",
    "The DICOM file's header holds far more elements than any radiograph's (sequences of many thousands "
    "of items); the file is damaged or forged.",
)


class _HeaderReads(io.BytesIO):
    """The file for pydicom's parse: refused once the header has taken more reads than any film's. The pixel
    data's fragments are bounded apart (_MAX_FRAGMENTS), and nothing after the pixel data is parsed."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self._reads_left, self._in_header, self.exhausted = _HEADER_READS, True, False

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
                raise _TOO_MANY_ELEMENTS
        return super().read(size)


# Only the first item of a LUT sequence is applied; a film has one Modality LUT and a few VOI LUTs
# (presets). A defined-length sequence is left unparsed by the header's read and parsed whole when first
# used: 100,000 VOI LUT items took 4.8 s.
_MAX_LUT_ITEMS = 64


def _refuse_long_lut_sequences(ds, data: bytes) -> None:
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        element = ds.get_item(keyword, keep_deferred=True) if keyword in ds else None
        if isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF:
            # Unparsed (and over 64 KB, unread): its item headers are counted in the file.
            item = _ITEM if element.is_little_endian else b"\xff\xfe\xe0\x00"
            items = data.count(item, element.value_tell, element.value_tell + element.length)
        else:
            items = len(element.value or ()) if element is not None else 0
        if items > _MAX_LUT_ITEMS:
            raise _TOO_MANY_ELEMENTS


def undecodable_syntax() -> DecodeError:
    return DecodeError(
        "unsupported_dicom",
        "The DICOM image is compressed in a format this server cannot decode (for example MPEG-2, H.264, "
        "JPEG XL, a retired JPEG process or a vendor's private compression). Export it uncompressed "
        "(Explicit VR Little Endian) and upload again.",
    )


def _check_frame_header(ds, data: bytes, tsyntax, rows: int, columns: int) -> int:
    """The codecs allocate what the compressed frame's own header claims, not what
    Rows/Columns say: read that header first, so a 64x64 DICOM cannot smuggle in a
    30000x30000 JPEG. Returns the bytes the codec sets up beyond the samples."""
    if tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        read_header = _jpeg_frame_header
    elif tsyntax in JPEG2000TransferSyntaxes:
        read_header = _j2k_frame_header
    else:
        return 0  # RLE decodes into the size the dataset declares
    frames = int(ds.get("NumberOfFrames") or 1)
    # From the file, not ds.PixelData: that would read every frame's fragments (a 20-frame JPEG film's 30 MB).
    first = next(generate_frames(_at_pixel_data(ds, data), number_of_frames=frames))
    frame_rows, frame_columns, components, setup = read_header(first)
    if (frame_rows, frame_columns) != (rows, columns):
        raise DecodeError(
            "corrupt_dicom",
            f"The DICOM file says {columns}x{rows} pixels but its compressed image is "
            f"{frame_columns}x{frame_rows}; the file is damaged or forged.",
        )
    samples = int(ds.get("SamplesPerPixel") or 1)
    if components is not None and components != samples:
        raise DecodeError(
            "corrupt_dicom",
            f"The DICOM file says {samples} samples a pixel but its compressed image has {components} "
            "components; the file is damaged or forged.",
        )
    return setup


def _at_pixel_data(ds, data: bytes) -> io.BytesIO:
    """The file, positioned at the start of the Pixel Data's value (left unread in `ds`)."""
    stream = io.BytesIO(data)
    stream.seek(ds.get_item("PixelData", keep_deferred=True).value_tell)
    return stream


# A compressed frame in more fragments than this is forged: a 64 x 64 JPEG film followed by 5 million empty
# fragments (a 38 MB upload) took 612 MB and 17 s to decode, pydicom holding every fragment. Writers use
# one fragment a frame or pieces of a few KB (a 30 MB frame in 4 KB pieces is 7,700 of them).
_MAX_FRAGMENTS = 100_000
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian, as every encapsulated transfer syntax is


def _first_frame_extent(stream: io.BytesIO, ds) -> tuple[int, int]:
    """(bytes, fragments) of the first compressed frame and the Basic Offset Table, from the item headers
    alone: no fragment is read. The first frame ends where the offset table puts the second; without a
    table it is one fragment when there are as many as frames, and all of them otherwise (the bound)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    header = stream.read(8)
    table = struct.unpack_from("<L", header, 4)[0] if len(header) == 8 and header[:4] == _ITEM else 0
    offsets = struct.unpack(f"<{min(table, 8) // 4}L", stream.read(min(table, 8) // 4 * 4))
    stream.seek(table - min(table, 8) // 4 * 4, 1)
    start, lengths = stream.tell(), []
    while len(header := stream.read(8)) == 8 and header[:4] == _ITEM:  # to the sequence's end
        if frames > 1 and len(offsets) > 1 and stream.tell() - 8 - start >= offsets[1]:
            break  # the second frame
        lengths.append(struct.unpack_from("<L", header, 4)[0])
        if len(lengths) > _MAX_FRAGMENTS:
            raise DecodeError(
                "corrupt_dicom",
                f"The DICOM file's compressed image is split into more than {_MAX_FRAGMENTS:,} fragments; "
                "the file is damaged or forged.",
            )
        stream.seek(lengths[-1], 1)
    if frames > 1 and len(offsets) < 2 and len(lengths) == frames:
        lengths = lengths[:1]  # a fragment a frame, as pydicom reads it
    return table + 8 * len(lengths) + sum(lengths), len(lengths)


# Start-of-frame markers of the JPEG family (all SOFn but DHT/JPG/DAC, plus JPEG-LS).
_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}
# Of which DCT-based (not lossless, process 14, nor JPEG-LS).
_DCT_SOF = _JPEG_SOF - {0xC3, 0xC7, 0xCB, 0xCF, 0xF7}


def _jpeg_frame_header(frame: bytes) -> tuple[int, int, None, int]:
    """(rows, columns, None, 0) from a JPEG / JPEG-LS frame header, walking the marker segments
    (libjpeg's own parameter reader decodes far more than the header)."""
    at = 2 if frame[:2] == b"\xff\xd8" else len(frame)
    while at + 9 <= len(frame):
        if frame[at] != 0xFF:
            break
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            rows, columns = struct.unpack_from(">HH", frame, at + 5)
            _refuse_without_end(frame)
            if marker in _DCT_SOF and frame[at + 4] == 8:
                # An 8-bit DCT frame takes the raster JPEG's checks: one cut short with an EOI appended, or a
                # progressive one stopping after its first scans, decodes with libjpeg's grey fill or as a blur.
                check_jpeg(frame)
                check_entropy_data(frame, None)
            return rows, columns, None, 0
        at += 2 + struct.unpack_from(">H", frame, at + 2)[0]
    raise DecodeError("corrupt_dicom", "The DICOM file's compressed image has no frame header.")


def _refuse_without_end(frame: bytes) -> None:
    """A JPEG or JPEG-LS frame cut short: the codecs (libjpeg, CharLS) decode what is there and fill the
    rest (a 512 x 512 film cut at half decoded without a word, its lower half grey or smeared), where the
    raster decoder refuses a cut JPEG. The frame must end with its EOI marker, which neither coding can
    hold anywhere else (0xFF is followed by 0x00 or a restart marker in JPEG's entropy-coded data, by a
    byte under 0x80 in JPEG-LS's); a fragment's padding byte, and a few more from lax writers, may follow."""
    if b"\xff\xd9" not in frame[-8:]:
        raise DecodeError(
            "corrupt_dicom",
            "The DICOM file's compressed image is incomplete: it ends before the whole picture is stored "
            "(the file was cut short); the file is damaged.",
        )


# JPEG 2000: the codestream starts with SOC and SIZ; a JP2 file (which some writers put in the Pixel
# Data) holds it in its "jp2c" box.
_J2K_START = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SIZ = struct.Struct(">HHIIIIIIIIH")  # Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz
# openjpeg sets up about 9.5 KB for every tile the header declares before it reads any (measured: a
# 2048 x 2048 film in 4,096 tiles of 32 px peaked 38 MB above the same film in one tile). Its header
# reader alone took 670 MB and 5 to 8 s for a 2 KB file whose 255 x 255 frame claimed 1 x 1 tiles
# (65,025), counted under 1 MB. Writers use one tile or tiles of 128 px and more: a 6000 x 6000 film in
# 128 px tiles is 2,209 of them, so more than 4,096 is forged.
_J2K_TILE_BYTES = 10 * 1024
_MAX_J2K_TILES = 4096


def _j2k_frame_header(frame: bytes) -> tuple[int, int, int, int]:
    """(rows, columns, components, bytes openjpeg sets up for the tiles) from the SIZ marker segment,
    read here: openjpeg's own header reader sets up every tile the header declares."""
    at = _jp2_codestream(frame) if frame.startswith(_JP2_SIGNATURE) else 0
    if frame[at : at + 4] != _J2K_START or len(frame) < at + 4 + _SIZ.size:
        raise DecodeError("corrupt_dicom", "The DICOM file's compressed image has no frame header.")
    _, _, x, y, x_origin, y_origin, tile_x, tile_y, tile_x_origin, tile_y_origin, components = _SIZ.unpack_from(
        frame, at + 4
    )
    if not (x > x_origin and y > y_origin and tile_x and tile_y and x > tile_x_origin and y > tile_y_origin):
        raise DecodeError("corrupt_dicom", "The DICOM file's compressed image has a malformed frame header.")
    tiles = -(-(x - tile_x_origin) // tile_x) * -(-(y - tile_y_origin) // tile_y)
    if tiles > _MAX_J2K_TILES:
        raise DecodeError(
            "corrupt_dicom",
            f"The DICOM file's compressed image is split into {tiles:,} tiles (at most {_MAX_J2K_TILES:,} "
            "are read); the file is damaged or forged.",
        )
    return y - y_origin, x - x_origin, components, tiles * _J2K_TILE_BYTES


def _jp2_codestream(frame: bytes) -> int:
    """Where the codestream starts in a JP2 file: after its "jp2c" box header (or the file's end)."""
    at = 0
    while at + 8 <= len(frame):
        length, kind = struct.unpack_from(">I4s", frame, at)
        header = 8
        if length == 1 and at + 16 <= len(frame):  # a 64-bit length follows
            length, header = struct.unpack_from(">Q", frame, at + 8)[0], 16
        if kind == b"jp2c":
            return at + header
        if length < header:  # 0: the box runs to the end of the file
            break
        at += length
    return len(frame)


_MAX_TABLE = 1 << 20
_LUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError, struct.error)


def _grey_levels(stored: np.ndarray, ds) -> np.ndarray:
    """Stored values -> Modality LUT -> VOI -> [0, 1]. Every step is pointwise, so for
    integer data the chain runs once per distinct value (at most 65536) and the image
    is one table lookup: exact, and ~20x faster than float64 arithmetic on a film."""
    low, high = (int(stored.min()), int(stored.max())) if stored.dtype.kind in "ui" else (0, -1)
    _as_pydicom_reads_it(ds, floats=stored.dtype.kind == "f")
    if not 0 <= high - low < _MAX_TABLE:
        return _grey_in_bands(stored, ds)  # float data, or 32-bit values spread too wide
    padding = _padding(stored, ds)
    # Padding (e.g. 0xFFFF around the detector's field) is not image: left in, it would set the range
    # and squeeze the anatomy into a few grey levels (PS3.3 C.7.5.1.1.2).
    image = stored if padding is None else stored[~padding]
    table = _grey_chain(np.arange(low, high + 1, dtype=np.int64), ds, image)
    grey = table[np.subtract(stored, low, dtype=np.int32) if low else stored]
    if padding is not None:
        grey[padding] = np.clip(grey[padding], 0.0, 1.0)  # beyond the image's range: shown at its nearer end
    return grey


def _as_pydicom_reads_it(ds, floats: bool) -> None:
    """The header as pydicom's grey-level functions need it to give the standard's result."""
    if floats:
        # Float pixel data has no Bits Stored or Pixel Representation, and any the file carries (copied
        # from an integer film) mean nothing; pydicom's windowing reads both, for its output range only,
        # which is scaled to [0, 1] here anyway: without them a windowed float film was called damaged.
        ds.BitsStored, ds.PixelRepresentation = 16, 0
    lut = (ds.get("VOILUTSequence") or [None])[0]
    descriptor = list(lut.get("LUTDescriptor") or []) if lut is not None else []
    if len(descriptor) == 3 and descriptor[2] == 8:
        # pydicom's apply_voi indexes the table through an array of the entries' type: uint8 for 8-bit
        # entries, so with more than 256 entries (a 12-bit film's 4096) every index wrapped modulo 256 and
        # the film came out in stripes. Read as 16-bit entries, the same values index without wrapping.
        lut.LUTDescriptor = [*descriptor[:2], 16]


_FLOAT_PADDING = {
    4: ("FloatPixelPaddingValue", "FloatPixelPaddingRangeLimit"),
    8: ("DoubleFloatPixelPaddingValue", "DoubleFloatPixelPaddingRangeLimit"),
}


def _padding(stored: np.ndarray, ds) -> np.ndarray | None:
    """Which pixels are padding: equal to Pixel Padding Value or, with Pixel Padding Range Limit,
    between the two inclusive. None when there is none, or when nothing but padding would remain."""
    try:
        if stored.dtype.kind == "f":  # Float or Double Float Pixel Padding Value: the floats themselves
            value, limit = (_first_number(ds.get(keyword)) for keyword in _FLOAT_PADDING[stored.dtype.itemsize])
        else:
            value, limit = (
                _stored_value(ds.get(keyword), ds) for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit")
            )
    except Exception:  # noqa: BLE001  a value pydicom cannot convert is no padding
        return None
    if value is None:
        return None
    low, high = (value, value) if limit is None else sorted((value, limit))
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() and not mask.all() else None


def _stored_value(value, ds) -> int | None:
    """A padding value as pydicom gives the pixels: cut to Bits Stored, and signed when they are."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    if value is None or value == "" or value == b"":
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if isinstance(value, bytes):  # Implicit VR "US or SS" left undecided
        value = int.from_bytes(value[:2], "little", signed=signed)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    value = int(value) & ((1 << bits) - 1)
    return value - (1 << bits) if signed and value >= 1 << (bits - 1) else value


def _grey_chain(values: np.ndarray, ds, stored: np.ndarray | None = None) -> np.ndarray:
    """The chain itself, scaled by the output range the VOI step defines (so a window
    means what it says) or, with no VOI in the file, by the declared range of the
    stored values. `stored` is the whole frame when `values` is only its value set."""
    bounds = _output_range(values if stored is None else stored, ds)
    values = _voi(apply_modality_lut(values, ds), ds)
    return scale_to_unit(values) if bounds is None else _scaled(values, bounds)


def _voi(values: np.ndarray, ds) -> np.ndarray:
    if ds.get("VOILUTSequence"):
        return apply_voi(values, ds)
    return apply_windowing(values, ds) if _usable_window(ds) else values


def _output_range(stored: np.ndarray, ds) -> tuple[float, float] | None:
    """(low, high): the chain's outputs shown black and white, the window's output range or the stored
    extremes through the chain. None when that range is empty or not finite (the image's own extremes
    are used then)."""
    rescaled = apply_modality_lut(_stored_extremes(stored, ds), ds)
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.ptp(np.asarray(rescaled, dtype=np.float64))
    if not np.isfinite(span):
        # A slope of 1e305 on 12-bit data, or float data from -1e308 to 1e308: no float64 holds the span,
        # and the film came out blank (UNKNOWN, "every pixel has the same value") or NaN (refused as such).
        raise DecodeError(
            "corrupt_dicom",
            "The DICOM file's pixel values, after its Rescale Slope and Rescale Intercept, span more than "
            "the range of numbers a computer holds; the file is damaged.",
        )
    if _usable_window(ds) and not ds.get("VOILUTSequence"):
        # The window's output at its dark and its bright end, in that order: pydicom takes its output range
        # from the rescaled stored range, which a negative Rescale Slope turns upside down, so its window
        # then darkens what it should brighten (dcmtk and viewers keep it the right way up: a slope of -1
        # with a window gave the film as a negative). Scaled from dark end to bright end, it is upright.
        low, high = (float(end) for end in apply_windowing(np.array([-np.inf, np.inf]), ds))
    else:
        bounds = _voi(rescaled, ds)
        low, high = float(np.min(bounds)), float(np.max(bounds))
    return (low, high) if np.isfinite([low, high]).all() and high != low else None


def _scaled(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return ((np.asarray(values, dtype=np.float64) - low) / (high - low)).astype(np.float32)


# Rows of this many pixels at a time: the chain's float64 steps take about 20 bytes a pixel.
_BAND_PIXELS = 1 << 18


def _grey_in_bands(stored: np.ndarray, ds) -> np.ndarray:
    """_grey_chain(stored, ds), band by band of rows into one float32 image. Every step is pointwise,
    so the pixels are the whole-image chain's; its float64 copies are a band's, not the film's (a
    rescaled 3000 x 3000 float32 film peaked at 206 MB through the whole-image chain, counted 170)."""
    rows = max(1, _BAND_PIXELS // stored.shape[1])
    bands = [slice(start, start + rows) for start in range(0, stored.shape[0], rows)]
    # Padding sets no part of the range (see _grey_levels); beyond it, it ends clipped at the nearer end.
    padding = _padding(stored, ds)
    bounds = _output_range(stored if padding is None else stored[~padding], ds)
    del padding
    grey = np.empty(stored.shape, dtype=np.float32)

    def mapped(band: slice) -> np.ndarray:
        return _voi(apply_modality_lut(stored[band], ds), ds)

    if bounds is not None:
        for band in bands:
            grey[band] = _scaled(mapped(band), bounds)
        return grey
    # Range empty or not finite: scale_to_unit's map, with the extremes of the whole mapped image.
    lows, highs = zip(*(scaling_extremes(as_scaled_to_unit(mapped(band))) for band in bands), strict=True)
    for band in bands:
        grey[band] = scale_with(as_scaled_to_unit(mapped(band)), min(lows), max(highs))
    return grey


_VOI_FUNCTIONS = {"LINEAR": 1.0, "LINEAR_EXACT": 0.0, "SIGMOID": 0.0}  # width must be >= 1, > 0, > 0


def _usable_window(ds) -> bool:
    """Whether the file's first window can be applied (PS3.3 C.11.2.1.2). An empty, zero, negative or
    non-numeric centre or width is common in exports; viewers then ignore the window and show the
    stored range, and so do we rather than call the film damaged."""
    try:
        centre, width = (_first_number(ds.get(keyword)) for keyword in ("WindowCenter", "WindowWidth"))
        # As pydicom's apply_windowing reads it: an empty function is not LINEAR to it.
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    except Exception:  # noqa: BLE001  a value pydicom cannot convert is no window
        return False
    if centre is None or width is None or function not in _VOI_FUNCTIONS:
        return False
    least = _VOI_FUNCTIONS[function]
    return width >= least if least else width > 0


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None  # the first window is the one shown by default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


# (shift, bits stored, signed) of samples whose stored bits sit above bit 0.
BitLayout = tuple[int, int, bool]


def _high_bit_layout(ds, tsyntax, samples: int) -> BitLayout | None:
    """(shift, bits stored, signed) when the stored bits of uncompressed grey samples do not start at
    bit 0, i.e. High Bit is above Bits Stored - 1; None otherwise. PS3.5 8.1.1 lets them sit anywhere
    in the allocated bits (older CR readers write 12 bits with High Bit 15); pydicom assumes bit 0 and
    keeps the low bits, which turns such a film into stripes where dcmtk and PACS viewers show it."""
    if tsyntax.is_encapsulated or samples != 1:
        return None  # a codec gives the samples at bit 0 whatever High Bit says
    if "PixelData" not in ds:
        return None  # Float or Double Float Pixel Data: IEEE floats, whose bits are not stored bits
    try:
        allocated, stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
        high_bit = ds.get("HighBit")
        shift = int(high_bit) + 1 - stored if high_bit not in (None, "") else 0
    except (TypeError, ValueError):
        return None
    if stored <= 0 or shift <= 0 or stored + shift > allocated:
        return None
    return shift, stored, int(ds.get("PixelRepresentation") or 0) == 1


def _shifted_down(raw: np.ndarray, layout: BitLayout) -> np.ndarray:
    """Samples read as whole allocated words -> their stored bits at bit 0 (the bits around them, an
    overlay say, dropped), sign-extended when the pixel representation is signed."""
    shift, stored, signed = layout
    words = raw.view(f"u{raw.dtype.itemsize}")
    values = (words >> shift) & ((1 << stored) - 1)
    if not signed:
        return values
    values = values.astype(f"i{raw.dtype.itemsize}")
    return np.where(values >= 1 << (stored - 1), values - (1 << stored), values).astype(values.dtype)


_LUMA = (0.299, 0.587, 0.114)


_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")


def _first_frame(data: bytes, tsyntax, samples: int, layout: BitLayout | None) -> tuple[np.ndarray, str]:
    """The first frame's samples and the colour space they are in. Grey films are read frame by frame
    from the stream. Colour is asked for as the decoder produces it: converting a YBR frame to RGB
    is pydicom's costliest step (3.5 s and 1.1 GB for a 5700 x 5700 JPEG capture, against 0.6 s and
    0.37 GB as YBR), and the grey we need is Y itself."""
    if samples != 3:
        if layout:
            return _shifted_down(pixel_array(io.BytesIO(data), index=0, correct_unused_bits=False), layout), ""
        return pixel_array(io.BytesIO(data), index=0), ""
    # As pixel_array reads one frame from a file (its own _array_common), but keeping the decoder's account
    # of the colour space: given the whole data set instead, the decoder copied every frame of the film.
    stream = io.BytesIO(data)
    _, options = _array_common(stream, [], as_rgb=False)
    # Planar Configuration is required with three samples, but capture devices leave it out, JPEG ones
    # above all (the codec, not the element, lays out the samples): read as interleaved, as viewers do.
    options.setdefault("planar_configuration", 0)
    frame, meta = get_decoder(tsyntax).as_array(stream, index=0, validate=True, **options)
    return frame, str(meta.get("photometric_interpretation", "RGB")).upper()


def _grey_from_colour(frame: np.ndarray, colour_space: str = "RGB") -> tuple[np.ndarray, float]:
    """(H, W, 3) samples -> grey in [0, 1] and the colourfulness of a ~64 px subsample.

    YBR_FULL: the grey is Y, which is the ITU-R 601 luma of the RGB it encodes; only the subsample
    is converted to RGB to measure colour. RGB: the same values as scale_to_unit(frame) @ luma
    weights; both are affine, so the weighted sum is taken on the samples as stored, one channel
    at a time, and scaled once. The whole frame in float32 (12 bytes a pixel) is never made."""
    step = max(1, min(frame.shape[:2]) // 64)
    if colour_space in _YBR_FULL and frame.dtype == np.uint8:
        sample = convert_color_space(np.ascontiguousarray(frame[::step, ::step]), "YBR_FULL", "RGB")
        grey = frame[..., 0].astype(np.float32) * np.float32(1 / 255)
        return grey, _channel_spread(sample.astype(np.float32) / np.float32(255))
    grey = frame[..., 0].astype(np.float32) * np.float32(_LUMA[0])
    for channel in (1, 2):
        grey += frame[..., channel].astype(np.float32) * np.float32(_LUMA[channel])
    # The affine map scale_to_unit would apply to the whole frame, found from its extremes.
    extremes = np.array([frame.min(), frame.max()], dtype=frame.dtype)
    unit = scale_to_unit(extremes)
    low, high = float(extremes[0]), float(extremes[1])
    scale = (float(unit[1]) - float(unit[0])) / (high - low) if high > low else 0.0
    offset = np.float32(float(unit[0]) - low * scale)
    grey *= np.float32(scale)
    grey += offset
    sample = frame[::step, ::step].astype(np.float32) * np.float32(scale) + offset
    return grey, _channel_spread(sample)


def _channel_spread(rgb: np.ndarray) -> float:
    """Colourfulness: the mean spread between a pixel's brightest and darkest channel."""
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())


def _stored_extremes(stored: np.ndarray, ds) -> np.ndarray:
    """Lowest and highest value the stored pixels can take. For unsigned data the
    depth is the smallest one (8 bits up to Bits Stored) that holds the brightest
    pixel, the same rule as for 16-bit PNG: "Bits Stored 16" on 12-bit data is common."""
    if stored.dtype.kind == "f":
        return np.array([np.nanmin(stored), np.nanmax(stored)])
    declared = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return np.array([-(2 ** (declared - 1)), 2 ** (declared - 1) - 1], dtype=np.int64)
    bits = min(declared, max(8, int(stored.max()).bit_length()))
    return np.array([0, 2**bits - 1], dtype=np.int64)


def _check_rescale(ds) -> None:
    """Rescale Slope and Intercept multiply every pixel: "NaN", "inf" or a word there would make the
    whole image NaN (or a crash in pydicom), so the file is refused with a message naming them."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        try:
            value = ds.get(keyword)
            number = None if value is None or value == "" else float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if number is not None and not np.isfinite(number):
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file's Rescale Slope or Rescale Intercept is not a valid number; the file is damaged.",
            )


def _facts(ds, tsyntax) -> dict[str, str]:
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


def _age(ds) -> float | None:
    """The patient's age in years, or None when absent or malformed (never an error)."""
    values = {}
    for keyword in _AGE_KEYWORDS:
        try:
            values[keyword] = ds.get(keyword)
        except Exception:  # noqa: BLE001  a value pydicom cannot convert is simply no value
            values[keyword] = None
    return age_from_header(values)


def _modality_reason(facts: dict[str, str]) -> str | None:
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


def _corrupt() -> DecodeError:
    return DecodeError("corrupt_dicom", "The DICOM file is damaged or incomplete and cannot be read.")
