"""C-STORE of one result to DICOM_RESULTS_DESTINATION (AE@host:port). Any failure (PACS down, association
refused, a non-success status) is a SendError with a message an administrator can act on; the outbox
(tasks.py) retries it later."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE

from ..config import AE_TITLE_RULE, ae_title_ok

# Success, and the Warning statuses a PACS answers when it stored the object with changes.
_STORED = {0x0000, 0xB000, 0xB007, 0xB006}


class DestinationError(ValueError):
    pass


class SendError(RuntimeError):
    pass


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    ae_title, at, address = text.strip().partition("@")
    host, colon, port = address.rpartition(":")
    if not (at and colon and host and port.isdigit() and 0 < int(port) < 65536 and ae_title_ok(ae_title)):
        raise DestinationError(
            f"DICOM_RESULTS_DESTINATION must read AE@host:port (e.g. ORTHANC@pacs:4242; {AE_TITLE_RULE}), not {text!r}"
        )
    return Destination(ae_title, host, int(port))


def send(destination: Destination, calling_ae_title: str, data: bytes, timeout: float = 30.0) -> None:
    dataset = dcmread(io.BytesIO(data))
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    # Implicit VR Little Endian too: the one transfer syntax every DICOM SCP must take (PS3.5 10.1). A
    # PACS set to take only it accepted no context for our Explicit VR files, and every result failed
    # (as "cannot be reached"); pynetdicom re-encodes an uncompressed data set for the accepted one.
    syntaxes = list(dict.fromkeys([dataset.file_meta.TransferSyntaxUID, ImplicitVRLittleEndian]))
    ae.add_requested_context(dataset.SOPClassUID, syntaxes)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise SendError(f"{destination} {_not_established(assoc, dataset, calling_ae_title)}")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise SendError(f"{destination} gave no answer to the C-STORE (connection lost or timed out)")
    if code not in _STORED:
        raise SendError(f"{destination} answered the C-STORE with status 0x{code:04X}")


def _not_established(assoc, dataset, calling_ae_title: str) -> str:
    """Why the PACS did not take the association, in words an administrator can act on."""
    if assoc.is_rejected:
        rejection = assoc.acceptor.primitive
        return f"refused the association: {rejection.reason_str} (this node calls as {calling_ae_title})"
    if assoc.rejected_contexts:  # pynetdicom aborts an association with no context accepted
        return f"does not take {dataset.SOPClassUID.name} objects (it refused their presentation context)"
    return "cannot be reached"
