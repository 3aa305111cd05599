"""DICOM files to `DecodedImage`: the grey values a radiologist's viewer would show.

The steps, each in its module: the header, read with bounds and only the elements needed, so no
identifying element is ever parsed (`dicom_header.py`); the first frame's samples, compressed frames
checked against their own headers first (`dicom_frames.py`); grey levels by the standard pipeline in
the standard order, Modality LUT (or rescale slope/intercept), then VOI LUT (or window), then
MONOCHROME1 inversion here (`dicom_grey.py`). Here: what is refused and why, the memory a decode will
take counted before it is taken, and the transfer syntaxes read at all.
"""

from __future__ import annotations

import io
import logging
import warnings
from importlib.util import find_spec

import numpy as np
from pydicom import config
from pydicom.filereader import _read_file_meta_info, read_partial, read_preamble
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLossless,
    JPEGLosslessSV1,
)

from .dicom_frames import (
    at_pixel_data,
    check_frame_header,
    first_compressed_frame,
    first_frame,
    first_frame_extent,
    high_bit_layout,
    refuse_cut_lossless,
)
from .dicom_grey import LUT_ERRORS, check_rescale, grey_from_colour, grey_levels
from .dicom_header import (
    DEFER_BYTES,
    NEEDED_TAGS,
    TOO_MANY_ELEMENTS,
    HeaderReads,
    acquisition_facts,
    cut_inside_encapsulated_pixels,
    holds_unread_pixel_data,
    modality_reason,
    patient_age,
    refuse_long_lut_sequences,
)
from .image import (
    MB,
    DecodedImage,
    DecodeError,
    check_dimensions,
    check_memory,
    shrink,
)


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


def decode_dicom(
    data: bytes, *, target_size: int | None = None, memory_mb: int | None = None, copied_bytes: int = 0
) -> DecodedImage:
    """`copied_bytes`: memory the caller spent on the file for this decode (decode() copies a file to
    give it back its preamble), counted with the decode's own."""
    deflated, header = False, HeaderReads(data)
    try:
        stream = io.BytesIO(data)
        read_preamble(stream, False)
        # Read alone, before the data set: pydicom inflates a deflated data set whole as it reads it, without
        # bound (a 500 KB upload inflated to 1 GB in 4.6 s when this refusal came after the read).
        deflated = _read_file_meta_info(stream).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if not deflated:
            # The pixels stay in `data` until the one frame needed is read from it: parsed with the header, a
            # multi-frame film's every frame was copied (a 20-frame 1000 x 1000 film peaked at 42 MB, counted 15).
            ds = read_partial(header, header.at_element, defer_size=DEFER_BYTES, specific_tags=NEEDED_TAGS)
    except Exception as exc:  # noqa: BLE001  any parse failure is a damaged file
        # pydicom reports the read limit as "no tag to read" (an OSError): it is named here.
        raise (TOO_MANY_ELEMENTS if header.exhausted else _corrupt()) from exc
    if deflated:
        raise DecodeError(
            "unsupported_dicom",
            "Deflated DICOM is not accepted; export the image uncompressed or JPEG-compressed.",
        )
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise _corrupt()
    refuse_long_lut_sequences(ds, data)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if cut_inside_encapsulated_pixels(data):
            raise DecodeError(
                "corrupt_dicom",
                "The DICOM file is incomplete: it ends inside its compressed image (the file was cut short); "
                "the file is damaged.",
            )
        if holds_unread_pixel_data(data):
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
    compressed, pieces = first_frame_extent(at_pixel_data(ds, data), ds) if tsyntax.is_encapsulated else (0, 0)
    held = pixels * per_pixel + min(4 * pixels, 32 * MB) + copied_bytes + compressed + 256 * pieces
    check_memory(columns, rows, held, memory_mb)
    if tsyntax.is_encapsulated:
        # What the codec sets up from the frame's header beyond the samples (JPEG 2000: its tiles).
        check_memory(columns, rows, held + check_frame_header(ds, data, tsyntax, rows, columns), memory_mb)

    check_rescale(ds)
    try:
        frame, colour_space = first_frame(data, tsyntax, samples, high_bit_layout(ds, tsyntax, samples))
    except NotImplementedError as exc:
        if tsyntax.is_compressed:
            raise  # a codec that is not installed: decode() names it
        raise DecodeError(
            "unsupported_dicom",
            f"The DICOM image stores its samples in {bits}-bit words, which cannot be read; "
            "export it with 8 or 16 bits allocated.",
        ) from exc
    if tsyntax in (JPEGLossless, JPEGLosslessSV1) and frame.ndim == 2:
        refuse_cut_lossless(first_compressed_frame(ds, data), frame)
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        # NaN or infinity in Float Pixel Data would turn every grey level downstream into NaN.
        raise DecodeError(
            "corrupt_dicom",
            "The DICOM file's image holds invalid pixel values (not a number or infinite); the file is damaged.",
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    facts = acquisition_facts(ds, tsyntax)
    colourfulness = 0.0
    if frame.ndim == 3:
        # Colour DICOM (RGB, or YBR that pydicom has already converted to RGB).
        pixels, colourfulness = grey_from_colour(frame, colour_space)
    elif frame.ndim == 2 and photometric in ("MONOCHROME1", "MONOCHROME2", ""):
        try:
            pixels = grey_levels(frame, ds)
        except DecodeError:
            raise  # a ValueError too, but one that says what it is
        except LUT_ERRORS as exc:
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
    return DecodedImage(pixels, "DICOM", columns, rows, colourfulness, facts, modality_reason(facts), patient_age(ds))


def undecodable_syntax() -> DecodeError:
    return DecodeError(
        "unsupported_dicom",
        "The DICOM image is compressed in a format this server cannot decode (for example MPEG-2, H.264, "
        "JPEG XL, a retired JPEG process or a vendor's private compression). Export it uncompressed "
        "(Explicit VR Little Endian) and upload again.",
    )


def _corrupt() -> DecodeError:
    return DecodeError("corrupt_dicom", "The DICOM file is damaged or incomplete and cannot be read.")
