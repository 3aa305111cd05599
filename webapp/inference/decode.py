"""Stage 1: decode. Uploaded bytes to a grayscale float image, or a clear refusal.

Every format ends as the same thing: a 2-D float32 array in [0, 1] where bright means
dense tissue (the MONOCHROME2 convention), and an 8-bit film's values are the same in every
container, so the later stages never care where a file came from.

The type is sniffed from the bytes, never from the file name, and each format is
opened only by its own decoder: Pillow never gets to guess (its guessing is how
EPS/ghostscript and other surprises get reached). Whatever goes wrong inside a
decoder ends as a `DecodeError` with a stable code; nothing else leaves `decode()`.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings

from PIL import Image, ImageFile, ImageOps

from .image import (
    LOW_RES_SIDE,
    MAX_PIXELS,
    DecodedImage,
    DecodeError,
    check_dimensions,
    check_memory,
    on_8bit_levels,
    refuse_non_finite,
    too_large,
)
from .raster import coefficient_bytes, peak_bytes, stored_bytes_per_pixel, to_gray
from .structure import (
    FULL_CHECK,
    GREY_FILL_TEST,
    check_entropy_data,
    check_jpeg,
    check_png,
    may_hide_a_grey_fill,
)

# Pillow's own bomb guard stays on, at our limit. It only warns between 1x and 2x the
# limit; that warning is made an error process-wide (a filter, not catch_warnings,
# which is not thread-safe), so anything in this process that opens an oversized image
# refuses it. `check_dimensions` repeats the test explicitly, so the refusal holds even
# where a test runner has reset the warning filters.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

# A truncated file must be refused, never half-decoded with grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow format names we accept for each sniffed type ("MPO" is how Pillow names the
# multi-picture JPEGs that phones write).
_PILLOW_FORMATS = {
    "JPEG": ("JPEG", "MPO"),
    "PNG": ("PNG",),
    "BMP": ("BMP",),
    "TIFF": ("TIFF",),
    "WEBP": ("WEBP",),
}

# Refused types we can name, so the message tells the user what they actually sent.
_KNOWN_OTHER_TYPES = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"\x7fELF", "a program (ELF executable)"),
    (b"MZ", "a program (Windows executable)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0", "an old-style Office document"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an icon file"),
)
_MARKUP_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<", re.S)
# Active content that has no business inside a radiograph, wherever it hides: script
# and frames for browsers, PHP for misconfigured servers. The patterns are long enough
# that compressed pixel data matches them by chance less than once in a million 50 MB
# files, and the leading literal "<" keeps the scan near memchr speed (~1 ms per MB).
_ACTIVE_CONTENT = re.compile(rb"<(?i:script|iframe|html[\s>]|\?php\s)")
# Executable or archive signatures that must not sit in a DICOM file's free preamble
# (the DICOM/PE polyglot trick, CVE-2019-11687).
_BAD_PREAMBLES = (b"MZ", b"\x7fELF", b"PK", b"%PDF", b"#!", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe")


def decode(data: bytes, *, target_size: int | None = None, memory_mb: int | None = None) -> DecodedImage:
    """Decode `data` or raise DecodeError. `target_size` is the model's input side:
    big images may be reduced on the way, but never below that many pixels. `memory_mb`
    caps the decode's peak memory (default DEFAULT_DECODE_MEMORY_MB), checked before decoding."""
    given, data = data, _with_dicom_preamble(data)
    kind = sniff(data)
    _refuse_polyglots(data, kind)
    if kind == "DICOM" and _looks_like_bare_dicom_data_set(data[132 : 132 + 1024]):
        raise _BARE_DICOM_DATA_SET  # 'DICM' but no file meta information: the transfer syntax is unknown
    try:
        if kind == "DICOM":
            from . import dicom  # pydicom is only imported when needed

            # A file given back its preamble is a copy of the caller's, held while it decodes: counted.
            copied = 0 if data is given else len(data)
            image = _on_grey_levels(
                dicom.decode_dicom(data, target_size=target_size, memory_mb=memory_mb, copied_bytes=copied)
            )
        else:
            image = _decode_raster(data, kind, target_size, memory_mb)
        refuse_non_finite(image.pixels)
        return _with_shape_checks(image)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        raise too_large() from exc
    except Exception as exc:  # noqa: BLE001  every decoder failure is a refusal, not a 500
        raise _decoder_failure(kind, exc) from exc


def sniff(data: bytes) -> str:
    """The real type from the leading bytes: an accepted kind, or a DecodeError."""
    if not data:
        raise DecodeError("empty_file", "The file is empty.")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    for signature, name in _KNOWN_OTHER_TYPES:
        if data.startswith(signature):
            raise _unsupported(name)
    if _looks_like_bare_dicom_data_set(data):
        raise _BARE_DICOM_DATA_SET
    if data[4:8] == b"ftyp":
        raise _unsupported("an HEIC/AVIF photo or a video")
    if _MARKUP_START.match(data[:4096]):
        raise _unsupported("a web page or SVG/XML document")
    if _looks_like_text(data[:4096]):
        raise _unsupported("a text file")
    raise DecodeError(
        "not_an_image",
        "The file is not an image we recognise. Upload a chest radiograph as DICOM, JPEG, PNG, TIFF, BMP or WebP.",
    )


_BARE_DICOM_DATA_SET = DecodeError(
    "unsupported_dicom",
    "The file looks like a DICOM data set without its file header (the 128-byte preamble, 'DICM' and "
    "the file meta information). Export the film from the PACS or viewer as a DICOM file and upload that.",
)


def _with_dicom_preamble(data: bytes) -> bytes:
    """Some tools write a DICOM file without its 128-byte preamble (starting at 'DICM' or at the file
    meta information). The preamble carries nothing, so restoring it lets the file be read as the
    DICOM it is, with every check of a complete file."""
    if data.startswith(b"DICM\x02\x00"):
        return bytes(128) + data
    if data.startswith(b"\x02\x00") and _explicit_vr(data[4:6]):
        return bytes(128) + b"DICM" + data
    return data


def _looks_like_bare_dicom_data_set(data: bytes) -> bool:
    """A data set with no file meta information at all (group 0008 first, as written by some
    toolkits' raw dumps): its transfer syntax is unknown, so it is named rather than guessed at."""
    if len(data) < 12 or data[:2] != b"\x08\x00" or data[3] != 0:
        return False
    implicit_length = int.from_bytes(data[4:8], "little")
    return _explicit_vr(data[4:6]) or 0 < implicit_length < min(len(data), 1024)


def _explicit_vr(vr: bytes) -> bool:
    return len(vr) == 2 and vr.isalpha() and vr.isupper()


def _unsupported(name: str) -> DecodeError:
    return DecodeError(
        "unsupported_type",
        f"The file is {name}, not a supported image. Upload a chest radiograph as DICOM, JPEG, PNG, TIFF, BMP or WebP.",
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def _refuse_polyglots(data: bytes, kind: str) -> None:
    """A valid image that is also something else (a ZIP, a PDF, a script) is refused:
    we cannot know which reading its sender meant."""
    tail = data[-65_557:]  # a ZIP's end record sits within the last 64 KiB + 22 bytes
    is_zip = b"PK\x05\x06" in tail and b"PK\x01\x02" in data
    # A DICOM may legitimately carry a PDF (Encapsulated PDF Storage) or markup in a text element,
    # and only its pixels are ever kept or shown; the document case ends as "no image in this DICOM".
    hides_content = kind != "DICOM" and (b"%PDF-" in data[:1024] or _ACTIVE_CONTENT.search(data))
    if is_zip or hides_content:
        raise DecodeError(
            "polyglot",
            "The file is an image with another file or script hidden inside it, and is refused for safety.",
        )
    if kind == "DICOM" and data.startswith(_BAD_PREAMBLES):
        raise DecodeError(
            "polyglot",
            "The DICOM file carries a program or archive in its preamble, and is refused for safety.",
        )


def _decode_raster(data: bytes, kind: str, target_size: int | None, memory_mb: int | None) -> DecodedImage:
    still_to_check = check_jpeg(data) if kind == "JPEG" else None
    if kind == "PNG":
        check_png(data)
    image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[kind])
    width, height = image.size
    check_dimensions(width, height)
    if target_size and image.format in ("JPEG", "MPO"):
        # DCT-domain scaling (1/2, 1/4, 1/8) keeps both sides >= target_size.
        image.draft(image.mode if image.mode in ("L", "RGB") else None, (target_size, target_size))
    # after draft: what load() allocates, and what to_gray adds to it at its peak. FULL_CHECK: a JPEG in
    # more than one scan (progressive, or a scan per component), whose coefficients libjpeg buffers
    # whole (also a single arithmetic-coded scan, which is rare and thus counted high).
    buffered = coefficient_bytes(image, (width, height)) if still_to_check == FULL_CHECK else 0
    check_memory(*image.size, peak_bytes(image, target_size) + buffered, memory_mb)
    image.load()  # the full decode happens here, inside the caller's error handling
    if still_to_check == FULL_CHECK or (still_to_check == GREY_FILL_TEST and may_hide_a_grey_fill(image)):
        check_entropy_data(data, image.mode)  # before orientation: the grey fill is the last stored pixel
    image, (width, height) = _orient(image, (width, height), memory_mb, target_size)
    pixels, colourfulness = to_gray(image, target_size)
    return DecodedImage(pixels, kind, width, height, colourfulness)


def _orient(
    image: Image.Image, size: tuple[int, int], memory_mb: int | None, target_size: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    """Apply the EXIF orientation; a broken EXIF block leaves the pixels as stored. Turning the image
    makes a second stored copy, which must fit in the budget with the rest of the decode."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  unreadable metadata must not cost a readable image
        return image, size
    if orientation not in range(2, 9):
        return image, size
    stored = image.width * image.height * stored_bytes_per_pixel(image.mode)
    check_memory(*image.size, max(peak_bytes(image, target_size), 2 * stored), memory_mb)
    oriented = ImageOps.exif_transpose(image)
    swapped = orientation in (5, 6, 7, 8)
    return oriented, (size[1], size[0]) if swapped else size


def _on_grey_levels(image: DecodedImage) -> DecodedImage:
    """An 8-bit film's pixels exactly as the JPEG decoder writes them, whatever its container."""
    return dataclasses.replace(image, pixels=on_8bit_levels(image.pixels))


def _with_shape_checks(image: DecodedImage) -> DecodedImage:
    if image.unknown_reason:
        return image
    reason = None
    short = min(image.width, image.height)
    if short < LOW_RES_SIDE:
        reason = f"The image is only {image.width}x{image.height} pixels, too small to assess a chest radiograph."
    elif float(image.pixels.max()) - float(image.pixels.min()) < 1 / 255:
        reason = "The image is blank: every pixel has the same value."
    if reason is None:
        return image
    return DecodedImage(
        image.pixels,
        image.format,
        image.width,
        image.height,
        image.colourfulness,
        image.facts,
        reason,
    )


def _decoder_failure(kind: str, exc: Exception) -> DecodeError:
    if kind == "DICOM":
        # decode_dicom() refuses a transfer syntax it has no decoder for before decoding; a plugin may
        # still find a variant of a known one it cannot decode (NotImplementedError): the file is fine.
        if isinstance(exc, NotImplementedError):
            from .dicom import undecodable_syntax

            return undecodable_syntax()
        return DecodeError("corrupt_dicom", "The DICOM file is damaged or incomplete and cannot be read.")
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or "premature end" in text:
        return DecodeError("truncated", "The image file is incomplete (truncated); upload it again.")
    return DecodeError("corrupt_image", "The image file is damaged and cannot be decoded.")
