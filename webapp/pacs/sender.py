"""C-STORE of one result to DICOM_RESULTS_DESTINATION (AE@host:port). Any failure (PACS down, association
refused, a non-success status) is a SendError with a message an administrator can act on; the outbox
(tasks.py) retries it later. A refusal no later try can change (Refused: the PACS does not know our AE
title, takes no SR, says the data set is not what it can store) is not retried: the PACS's
configuration has to change first, and the administrator then sends the result again from the outbox."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS
from pynetdicom.status import code_to_category as status_category

from ..config import AE_TITLE_RULE, ae_title_ok
from ..env import ConfigError
from .tls import client_context, handshake_failure

# A Warning C-STORE status still means stored, with changes (PS3.4 B.2.3).
_STORED = (STATUS_SUCCESS, STATUS_WARNING)
# The failure statuses a PACS answers while it is short of something, which a later try may not meet:
# Out of Resources (PS3.4 B.2.3), Processing Failure, Duplicate Invocation and Resource Limitation
# (PS3.7 C). Every other failure the Storage service defines (SOP class not supported, not authorised,
# data set does not match the SOP class, cannot understand...) answers the same to every try; a status
# it does not define is retried, as before.
_TRANSIENT_FAILURES = frozenset({0x0110, 0x0210, 0x0213, *range(0xA700, 0xA800)})
# A-ASSOCIATE-RJ result (PS3.8 9.3.4): rejected-permanent, as opposed to 0x02 rejected-transient
# (pynetdicom names the values only as text, result_str).
_REJECTED_PERMANENT = 0x01


class DestinationError(ValueError):
    pass


class SendError(RuntimeError):
    pass


class Refused(SendError):
    """A refusal that trying again cannot change: the result is not tried again."""


class StoreAborted(SendError):
    """The PACS accepted the association, then aborted it (an A-ABORT) instead of answering the C-STORE.
    Orthanc does so to a calling AE title it does not list as a modality allowed to store, while it
    lets anyone echo; a PACS falling over mid-store does so once. The outbox tells the two apart by
    counting the aborts in a row (tasks.py)."""


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


def send(destination: Destination, calling_ae_title: str, data: bytes, timeout: float = 30.0, config=None) -> None:
    """`config`: the app's, for DICOM TLS (tls.py); none, or TLS off, sends over plain TCP."""
    dataset = dcmread(io.BytesIO(data))
    try:
        context = client_context(config or {})
    except ConfigError as exc:  # a certificate file removed or replaced since the worker started
        raise SendError(f"DICOM TLS: {exc}") from None
    # The PACS's certificate must name the host as DICOM_RESULTS_DESTINATION gives it.
    tls_args = (context, destination.host) if context else None
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    # Implicit VR Little Endian too: the one transfer syntax every DICOM SCP must take (PS3.5 10.1). A
    # PACS set to take only it accepted no context for our Explicit VR files, and every result failed
    # (as "cannot be reached"); pynetdicom re-encodes an uncompressed data set for the accepted one.
    syntaxes = list(dict.fromkeys([dataset.file_meta.TransferSyntaxUID, ImplicitVRLittleEndian]))
    ae.add_requested_context(dataset.SOPClassUID, syntaxes)
    received = []  # the PDUs the PACS sent: pynetdicom's association says "aborted" whoever aborted it
    on_pdu = (evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))
    assoc = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, evt_handlers=[on_pdu], tls_args=tls_args
    )
    if context is not None and context.failure is not None:
        if assoc.is_established:  # the PACS refused our certificate after the handshake (TLS 1.3)
            assoc.abort()
        # Tried again it fails the same until a certificate or a setting changes at one end.
        raise Refused(f"{destination}: TLS handshake failed: {handshake_failure(context.failure)}")
    if not assoc.is_established:
        raise _not_established(destination, assoc, received, dataset, calling_ae_title)
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    # An A-ABORT from the PACS, as opposed to a connection that died or a timeout (our own abort).
    if code is None and any(isinstance(pdu, A_ABORT_RQ) for pdu in received):
        raise StoreAborted(
            f"{destination} accepted the association and then aborted the C-STORE without a status: is this"
            f" node declared in the PACS as a modality allowed to store (AE title {calling_ae_title}, this"
            " host)? In Orthanc: DicomModalities, or DicomAlwaysAllowStore"
        )
    if code is None:
        raise SendError(f"{destination} gave no answer to the C-STORE (connection lost or timed out)")
    category = status_category(code)
    if category in _STORED:
        return
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, (category, "a status the Storage service does not define"))[1]
    message = f"{destination} answered the C-STORE with status 0x{code:04X} ({meaning})"
    permanent = category == STATUS_FAILURE and code in STORAGE_SERVICE_CLASS_STATUS and code not in _TRANSIENT_FAILURES
    raise (Refused if permanent else SendError)(message)


def _not_established(destination: Destination, assoc, received: list, dataset, calling_ae_title: str) -> SendError:
    """Why the PACS did not take the association, in words an administrator can act on.

    The rejection is read from the A-ASSOCIATE-RJ received when pynetdicom lost it: if our thread looks
    only after pynetdicom's has read the rejection and closed the connection (a busy machine),
    pynetdicom aborts and says neither rejected nor why; a permanent refusal then read as "cannot be
    reached" and was tried 60 times (one run in six of the Orthanc test on the shared 2-core machine)."""
    rejections = [pdu for pdu in received if isinstance(pdu, A_ASSOCIATE_RJ)]
    if assoc.is_rejected or rejections:
        rejection = assoc.acceptor.primitive if assoc.is_rejected else rejections[0]
        why = f"{destination} refused the association: {rejection.reason_str} (this node calls as {calling_ae_title})"
        return Refused(why) if rejection.result == _REJECTED_PERMANENT else SendError(why)
    if assoc.rejected_contexts:  # pynetdicom aborts an association with no context accepted
        return Refused(
            f"{destination} does not take {dataset.SOPClassUID.name} objects (it refused their presentation context)"
        )
    return SendError(f"{destination} cannot be reached")
