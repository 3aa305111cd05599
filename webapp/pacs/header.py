"""The few elements of a received data set that the node acts on, read from the bytes the sender encoded
with a bound on the work. The data set itself is spooled as received, never decoded here.

pydicom parses every item of an undefined-length sequence into Python objects to find its end, whether or
not anything asks for it: until 5 December the node decoded the whole data set (pynetdicom's
`event.dataset`), and a film of 100,000 empty sequence items (850 KB) took 1.4 to 2.2 s of the node's time
before it was answered Success, spooled, and refused by the screening job later.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from ..inference.dicom_header import HeaderReads

# A film to be screened is read up to its pixel data (Float, Double Float or integer Pixel Data), never
# into it: a flood anywhere in its header is refused here, to its sender, rather than spooled and refused
# by the screening job. Of any other object only the receipt is kept, which needs nothing after the Study
# Instance UID (an RT Structure Set or an SR may hold tens of thousands of items after it, and is not read).
PIXEL_DATA = 0x7FE00008
STUDY_INSTANCE_UID = 0x0020000D


class TooManyElements(Exception):
    """The data set took more reads than the decoder allows a film's header (HEADER_READS) before the
    node had what it needs: the same bound, so that the node refuses what the screening job would."""


def read_header(encoded: bytes, syntax: UID, screened: bool) -> Dataset:
    """The top-level elements of `encoded` (a data set without file meta, in `syntax`) before the pixel
    data of a film to be screened, or up to the Study Instance UID of any other object. Raises
    TooManyElements past the bound, or what pydicom raises for a data set it cannot parse."""

    def stop(tag, vr, length) -> bool:
        return tag >= PIXEL_DATA if screened else tag > STUDY_INSTANCE_UID

    stream = HeaderReads(encoded)  # the decoder's counted reads
    try:
        return read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=stop)
    except Exception:
        if stream.exhausted:
            raise TooManyElements from None
        raise
