"""The first frame's samples out of a DICOM file.

A compressed frame is checked against its own header before a codec sees it (its size, fragments,
JPEG 2000 tiles, a stream cut short), since codecs allocate what that header claims; stored bits above
bit 0 are moved down; only the first frame is read from the file; colour stays in the decoder's space.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.utils import _array_common
from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from .image import (
    DecodeError,
)
from .structure import check_entropy_data, check_jpeg


def check_frame_header(ds, data: bytes, tsyntax, rows: int, columns: int) -> int:
    """The codecs allocate what the compressed frame's own header claims, not what
    Rows/Columns say: read that header first, so a 64x64 DICOM cannot smuggle in a
    30000x30000 JPEG. Returns the bytes the codec sets up beyond the samples."""
    if tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        read_header = _jpeg_frame_header
    elif tsyntax in JPEG2000TransferSyntaxes:
        read_header = _j2k_frame_header
    else:
        return 0  # RLE decodes into the size the dataset declares
    first = first_compressed_frame(ds, data)
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


def first_compressed_frame(ds, data: bytes) -> bytes:
    """The first frame's compressed bytes, from the file, not ds.PixelData: that would read every
    frame's fragments (a 20-frame JPEG film's 30 MB)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    return next(generate_frames(at_pixel_data(ds, data), number_of_frames=frames))


def at_pixel_data(ds, data: bytes) -> io.BytesIO:
    """The file, positioned at the start of the Pixel Data's value (left unread in `ds`)."""
    stream = io.BytesIO(data)
    stream.seek(ds.get_item("PixelData", keep_deferred=True).value_tell)
    return stream


# A compressed frame in more fragments than this is forged: a 64 x 64 JPEG film followed by 5 million empty
# fragments (a 38 MB upload) took 612 MB and 17 s to decode, pydicom holding every fragment. Writers use
# one fragment a frame or pieces of a few KB (a 30 MB frame in 4 KB pieces is 7,700 of them).
_MAX_FRAGMENTS = 100_000


ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian, as every encapsulated transfer syntax is


def first_frame_extent(stream: io.BytesIO, ds) -> tuple[int, int]:
    """(bytes, fragments) of the first compressed frame and the Basic Offset Table, from the item headers
    alone: no fragment is read. The first frame ends where the offset table puts the second; without a
    table it is one fragment when there are as many as frames, and all of them otherwise (the bound)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    header = stream.read(8)
    table = struct.unpack_from("<L", header, 4)[0] if len(header) == 8 and header[:4] == ITEM else 0
    offsets = struct.unpack(f"<{min(table, 8) // 4}L", stream.read(min(table, 8) // 4 * 4))
    stream.seek(table - min(table, 8) // 4 * 4, 1)
    start, lengths = stream.tell(), []
    while len(header := stream.read(8)) == 8 and header[:4] == ITEM:  # to the sequence's end
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
                _check_dct_frame(frame)
            return rows, columns, None, 0
        at += 2 + struct.unpack_from(">H", frame, at + 2)[0]
    raise DecodeError("corrupt_dicom", "The DICOM file's compressed image has no frame header.")


def _check_dct_frame(frame: bytes) -> None:
    """An 8-bit DCT frame takes the raster JPEG's checks: one cut short with an EOI appended, or a
    progressive one stopping after its first scans, decodes with libjpeg's grey fill or as a blur. Their
    truncation refusal is reworded for a DICOM file: "upload it again" reads oddly on a PACS receipt,
    whose sender has to re-send or re-export the study; its code stays."""
    try:
        check_jpeg(frame)
        check_entropy_data(frame, None)
    except DecodeError as exc:
        if exc.code != "truncated":
            raise
        raise _cut_with_end_appended() from exc


def _cut_with_end_appended() -> DecodeError:
    """A DICOM frame cut short and its JPEG end marker (EOI) appended, which a codec decodes with a fill."""
    return DecodeError(
        "truncated",
        "The DICOM file's compressed image is incomplete: it was cut short and its end marker appended, "
        "so part of the picture is missing; the file is damaged.",
    )


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


# The lossless Huffman frame (process 14), the one lossless JPEG that DICOM's syntaxes hold.
_LOSSLESS_SOF = 0xC3


_DHT, _SOS, _DRI = 0xC4, 0xDA, 0xDD


_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the first marker after a scan's data


# Samples counted at a time: a few int32 arrays of 1 MB, not of the whole film (36 MB each at 3000 x 3000).
_LOSSLESS_BLOCK = 1 << 18


def refuse_cut_lossless(frame: bytes, samples: np.ndarray) -> None:
    """A lossless JPEG (process 14) frame cut short with an EOI appended: libjpeg decodes what is there,
    then reads zero bits to the end (a 12-bit film's lower half ramping down and wrapping to 65,000s),
    without a word. Its decoded samples tell how many bits the scan must hold: each one's difference
    from its prediction costs its Huffman code and as many bits again as its category (T.81 H.1.2), so
    a frame whose scan is shorter than its own samples' cost was cut. One grey scan is counted, in a
    few passes of numpy over the samples (60 ms for a 3000 x 3000 12-bit film, whose decode takes 0.8 s).
    Colour films, which no radiograph is, restart intervals (each resets the prediction) and a point
    transform (not lossless) are left to the EOI check."""
    segments = _lossless_segments(frame)
    if segments is None:
        return
    precision, predictor, lengths, start, end = segments
    counts = np.zeros(0x8001, np.int64)  # how many samples differ from their prediction by each amount
    rows = max(1, _LOSSLESS_BLOCK // samples.shape[1])
    for top in range(0, samples.shape[0], rows):
        x = samples[max(top - 1, 0) : top + rows].astype(np.int32) & ((1 << precision) - 1)
        difference = (x - _lossless_prediction(x, predictor, precision)) & 0xFFFF
        difference = np.minimum(difference, 0x10000 - difference)  # modulo 2**16, its magnitude
        counts += np.bincount(difference[1 if top else 0 :].ravel(), minlength=0x8001)
    category = np.frexp(np.arange(0x8001))[1]  # the bit length of each magnitude
    cost = np.asarray(lengths)[category] + np.where(category < 16, category, 0)
    if int(counts @ cost) > 8 * (end - start - frame.count(b"\xff\x00", start, end)):  # less stuffed zeros
        raise _cut_with_end_appended()


def _lossless_segments(frame: bytes) -> tuple[int, int, list[int], int, int] | None:
    """(precision, predictor, code length a category, where the scan's data starts and ends) of a
    one-component lossless Huffman frame without restart intervals or point transform, else None."""
    at, frame_header, lengths = 2, None, {}
    while at + 4 <= len(frame) and frame[at] == 0xFF:
        marker, (size,) = frame[at + 1], struct.unpack_from(">H", frame, at + 2)
        body = frame[at + 4 : at + 2 + size]
        if marker in _JPEG_SOF:
            if marker != _LOSSLESS_SOF or len(body) < 9 or body[5] != 1:
                return None
            frame_header = body
        elif marker == _DHT:
            lengths.update(_huffman_lengths(body))
        elif marker == _DRI and body[:2] != b"\x00\x00":
            return None
        elif marker == _SOS:
            if frame_header is None or len(body) < 6 or body[0] != 1 or body[5] & 15 or not 1 <= body[3] <= 7:
                return None  # a point transform (Pt) is not lossless, and libjpeg's samples are not x << Pt
            table = lengths.get(body[2] >> 4)
            end = _SCAN_END.search(frame, at + 2 + size)
            if table is None or end is None:
                return None
            return frame_header[0], body[3], table, at + 2 + size, end.start()
        at += 2 + size
    return None


def _huffman_lengths(body: bytes) -> Iterator[tuple[int, list[int]]]:
    """(table id, code length of each category 0..16) of the DC tables in a DHT segment. A category the
    table lacks counts one bit: the check then errs towards accepting."""
    at = 0
    while at + 17 <= len(body):
        kind_id, counts = body[at], body[at + 1 : at + 17]
        symbols = body[at + 17 : at + 17 + sum(counts)]
        lengths = [1] * 17
        codes = iter(symbols)
        for length, count in enumerate(counts, start=1):
            for _ in range(count):
                symbol = next(codes, None)
                if symbol is not None and symbol <= 16:
                    lengths[symbol] = length
        if kind_id >> 4 == 0:
            yield kind_id & 15, lengths
        at += 17 + sum(counts)


def _lossless_prediction(x: np.ndarray, predictor: int, bits: int) -> np.ndarray:
    """T.81 H.1.2.1: each sample's prediction from its left (a), upper (b) and upper-left (c)
    neighbours by the scan's selection value; the first line from the left, the first column from above,
    the first sample from half the range."""
    predicted = np.empty_like(x)
    a, b, c = x[1:, :-1], x[:-1, 1:], x[:-1, :-1]
    predicted[1:, 1:] = {
        1: lambda: a,
        2: lambda: b,
        3: lambda: c,
        4: lambda: a + b - c,
        5: lambda: a + ((b - c) >> 1),
        6: lambda: b + ((a - c) >> 1),
        7: lambda: (a + b) >> 1,
    }[predictor]()
    predicted[0, 1:] = x[0, :-1]
    predicted[1:, 0] = x[:-1, 0]
    predicted[0, 0] = 1 << (bits - 1)
    return predicted


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


# openjpeg decodes a codestream whose SIZ was rewritten to a larger image leniently, the missing code
# blocks as noise: a 1.5 KB stream of a small film claiming 2000 x 2000 in one tile decoded to noise that
# was screened. Real films need far more bytes a pixel: measured with openjpeg on six of the dataset's
# radiographs (224 px copies, 8 and 12 bits), lossless 2.9 to 7.7 bits a pixel, lossy 0.08 to 0.12 at
# 1:100 and 0.04 to 0.06 at 1:200 (ratios beyond radiology's guidelines); a smooth synthetic gradient,
# 0.34 lossless. One byte for 800 samples (0.01 bits) is 4 times below the harshest of these; the forged
# stream had 0.003. A blank film (a few hundred bytes) falls below it too, refused rather than called blank.
_J2K_PIXELS_A_BYTE = 800


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
    pixels = (x - x_origin) * (y - y_origin) * max(components, 1)
    if len(frame) * _J2K_PIXELS_A_BYTE < pixels:
        raise DecodeError(
            "corrupt_dicom",
            f"The DICOM file's JPEG 2000 image holds {len(frame):,} bytes for {x - x_origin}x{y - y_origin} "
            "pixels, far fewer than any real film needs; the file is damaged or forged.",
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


# (shift, bits stored, signed) of samples whose stored bits sit above bit 0.
BitLayout = tuple[int, int, bool]


def high_bit_layout(ds, tsyntax, samples: int) -> BitLayout | None:
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


# JPEG-LS by CharLS (pyjpegls), not pylibjpeg-libjpeg, which pydicom would pick first: libjpeg decodes a
# JPEG-LS frame cut short with its end marker appended, filling the rest with a smooth continuation of
# what is there, without a word, and the film was screened; CharLS refuses it, and decodes a complete
# frame the same sample for sample, about three times as fast (0.28 s against 0.91 s, 3000 x 3000 12-bit).
_STRICT_PLUGINS = dict.fromkeys(JPEGLSTransferSyntaxes, "pyjpegls")


def first_frame(data: bytes, tsyntax, samples: int, layout: BitLayout | None) -> tuple[np.ndarray, str]:
    """The first frame's samples and the colour space they are in. Grey films are read frame by frame
    from the stream. Colour is asked for as the decoder produces it: converting a YBR frame to RGB
    is pydicom's costliest step (3.5 s and 1.1 GB for a 5700 x 5700 JPEG capture, against 0.6 s and
    0.37 GB as YBR), and the grey we need is Y itself."""
    plugin = _STRICT_PLUGINS.get(tsyntax, "")
    if samples != 3:
        if layout:
            return _shifted_down(pixel_array(io.BytesIO(data), index=0, correct_unused_bits=False), layout), ""
        return pixel_array(io.BytesIO(data), index=0, decoding_plugin=plugin), ""
    # As pixel_array reads one frame from a file (its own _array_common), but keeping the decoder's account
    # of the colour space: given the whole data set instead, the decoder copied every frame of the film.
    stream = io.BytesIO(data)
    _, options = _array_common(stream, [], as_rgb=False)
    # Planar Configuration is required with three samples, but capture devices leave it out, JPEG ones
    # above all (the codec, not the element, lays out the samples): read as interleaved, as viewers do.
    options.setdefault("planar_configuration", 0)
    frame, meta = get_decoder(tsyntax).as_array(stream, index=0, validate=True, decoding_plugin=plugin, **options)
    return frame, str(meta.get("photometric_interpretation", "RGB")).upper()
