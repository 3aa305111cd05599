"""The node on the network (pynetdicom): Verification (C-ECHO) and Storage (C-STORE) of every storage
SOP class, so that whatever a routing rule sends is acknowledged: the screened classes in the transfer
syntaxes the decoder reads, the others in every transfer syntax but deflated; intake.py decides what
is screened. Calling AE titles outside
DICOM_ALLOWED_CALLING_AETS (when set) are rejected at association, before any data is sent."""

from __future__ import annotations

import logging
import signal
import socketserver
import ssl
import threading
import time
from collections.abc import Callable

from flask import Flask
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from ..extensions import db
from ..inference.dicom import DECODABLE_TRANSFER_SYNTAXES
from .header import TooManyElements, read_header
from .intake import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SCREENED_SOP_CLASSES, SUCCESS, Arrival, receive
from .tls import HANDSHAKE_SECONDS, handshake_failure, server_context

log = logging.getLogger(__name__)
# pynetdicom's DEBUG output dumps whole datasets (patient name included): never below INFO.
logging.getLogger("pynetdicom").setLevel(logging.INFO)
# The largest PDU a sender may use. pynetdicom's default (16 KiB) cuts an 8 MB film into ~510
# pieces, each a trip through its polling loops: with 1 MiB, 16 such films were stored 17-24% faster
# here (docs/serving.md). This is what the node offers; pynetdicom does not refuse a sender that
# ignores it, so it bounds nothing in memory (a C-STORE is held whole in memory either way: docs/dicom.md).
MAX_PDU_BYTES = 1024 * 1024
# How long a stop waits for the associations in progress: under `docker stop`'s 10 s grace.
STOP_WAIT_SECONDS = 8
# A deflated data set is inflated by pynetdicom without limit, whatever its class, as soon as the
# handler reads it (942 MB for a 373 KiB CR film; a 128 KiB CT of zeros holds 128 MB), and the decoder
# refuses a deflated film anyway. The context is rejected for every class, so a sender falls back to
# another transfer syntax it proposed (every sender supports Implicit VR Little Endian), or fails
# where its operator sees it, rather than hear Success.
ACCEPTED_TRANSFER_SYNTAXES = [uid for uid in ALL_TRANSFER_SYNTAXES if uid != DeflatedExplicitVRLittleEndian]
# A film to be screened only in a syntax the decoder reads (webapp/inference/dicom.py says which): accepted
# in JPEG XL, MPEG or HEVC it was answered Success and then refused at screening, seen on the outbox page
# only, while a context refused here (result 0x04) lets the sender use another syntax it proposed.
SCREENED_TRANSFER_SYNTAXES = list(DECODABLE_TRANSFER_SYNTAXES)


def build_ae(config) -> AE:
    ae = AE(ae_title=config["DICOM_AE_TITLE"])
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        screened = context.abstract_syntax in SCREENED_SOP_CLASSES
        ae.add_supported_context(
            context.abstract_syntax, SCREENED_TRANSFER_SYNTAXES if screened else ACCEPTED_TRANSFER_SYNTAXES
        )
    ae.require_calling_aet = list(config["DICOM_ALLOWED_CALLING_AETS"])
    ae.maximum_pdu_size = MAX_PDU_BYTES
    # A PACS that stalls mid-association must not hold a thread for ever.
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    return ae


# Why pynetdicom rejected an association, by (result source, diagnostic) of the A-ASSOCIATE-RJ it sent.
REJECTION_REASONS = {
    (0x01, 0x03): "its calling AE title is not in DICOM_ALLOWED_CALLING_AETS",
    (0x01, 0x07): "the called AE title is not this node's",
    (0x03, 0x02): "too many associations at once (local limit exceeded); the sender should try again",
}


def on_rejected(event) -> None:
    """pynetdicom's own line says only "Rejecting Association": a PACS administrator wiring up a new
    modality could not tell from the node's log which AE title (a typo, a case) or which host was
    turned away, nor why. AE titles and addresses name equipment, not patients."""
    rejection = event.assoc.acceptor.primitive
    key = (getattr(rejection, "result_source", None), getattr(rejection, "diagnostic", None))
    reason = REJECTION_REASONS.get(key, f"source {key[0]}, reason {key[1]}")
    requestor = event.assoc.requestor
    log.warning(
        "dicom: association from calling AE %r at %s rejected: %s", requestor.ae_title, requestor.address, reason
    )


# Why a presentation context was refused, by its result (PS3.8 9.3.3.2).
CONTEXT_REFUSALS = {
    0x03: "not taken here (the node takes Verification and the public storage classes only)",
    0x04: "none of the transfer syntaxes proposed (the first: {syntax}) is taken here (deflated is refused)",
}
# A screened class in a syntax the decoder does not read (JPEG XL, MPEG, HEVC...) or deflated.
SCREENED_SYNTAX_REFUSAL = (
    "none of the transfer syntaxes proposed (the first: {syntax}) is one the screening decodes; send the film "
    "uncompressed or in one listed in docs/dicom.md"
)


def refusal(context) -> str:
    """Why one presentation context was refused, for the node's log. pynetdicom keeps only the first
    transfer syntax the sender proposed in a refused context."""
    syntax = UID(context.transfer_syntax[0]).name if context.transfer_syntax else "none"
    if context.result == 0x04 and context.abstract_syntax in SCREENED_SOP_CLASSES:
        why = SCREENED_SYNTAX_REFUSAL
    else:
        why = CONTEXT_REFUSALS.get(context.result, f"result {context.result}")
    return f"{UID(context.abstract_syntax).name}: {why.format(syntax=syntax)}"


def on_accepted(event) -> None:
    """A context the node refused leaves the sender unable to send that kind of object (dcmtk: "No
    Acceptable Presentation Contexts"; Orthanc: "Cannot transcode"), while pynetdicom's lines here
    said only "Accepting Association": an administrator asked why a modality's private objects,
    deflated films or C-FIND fail could not see it in the node's log. SOP class and transfer syntax
    names name no patient."""
    refused = sorted({refusal(context) for context in event.assoc.rejected_contexts})
    if refused:
        requestor = event.assoc.requestor
        log.warning(
            "dicom: association from calling AE %r at %s: %d presentation context(s) refused: %s",
            requestor.ae_title,
            requestor.address,
            len(event.assoc.rejected_contexts),
            "; ".join(refused),
        )


def handlers(app: Flask) -> list:
    def on_echo(event) -> int:
        return SUCCESS

    def on_store(event) -> int:
        sop_class_uid = str(event.request.AffectedSOPClassUID)
        screened = sop_class_uid in SCREENED_SOP_CLASSES
        try:
            # Not event.dataset: pynetdicom decodes the whole data set for it (header.py says why not).
            dataset = read_header(
                event.encoded_dataset(include_meta=False),
                UID(event.context.transfer_syntax),
                screened=screened,
            )
            study_instance_uid = str(dataset.get("StudyInstanceUID", ""))
            modality = str(dataset.get("Modality", ""))
        except MemoryError:
            log.error("dicom: C-STORE could not be taken (MemoryError); answered Out of Resources")
            return OUT_OF_RESOURCES
        except TooManyElements:
            log.warning(
                "dicom: C-STORE refused: its data set holds far more elements than any film's (sequences of many "
                "thousands of items) before %s; answered Cannot Understand",
                "its pixel data" if screened else "its Study Instance UID",
            )
            return CANNOT_UNDERSTAND
        except Exception as exc:  # noqa: BLE001  e.g. a sequence never closed: no retry will read it
            # Out of Resources told the PACS to send it again, for ever, and its operator to look for a
            # full disk here. Only the type is logged: the message may quote the dataset.
            log.warning(
                "dicom: C-STORE refused: its data set cannot be read (%s); answered Cannot Understand",
                type(exc).__name__,
            )
            return CANNOT_UNDERSTAND
        with app.app_context():
            try:
                return receive(
                    Arrival(
                        sop_class_uid=sop_class_uid,
                        sop_instance_uid=str(event.request.AffectedSOPInstanceUID),
                        study_instance_uid=study_instance_uid,
                        modality=modality,
                        calling_aet=str(event.assoc.requestor.ae_title),
                        file_bytes=event.encoded_dataset(),
                    )
                )
            except Exception as exc:  # never a crashed association: the PACS keeps the film and retries
                # The exception's text may quote the dataset: only its type is logged.
                log.error("dicom: C-STORE could not be taken (%s); answered Out of Resources", type(exc).__name__)
                return OUT_OF_RESOURCES
            finally:
                db.session.remove()

    return [
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_ACCEPTED, on_accepted),
    ]


def start(app: Flask):
    """Listen on DICOM_BIND:DICOM_PORT in a thread of its own; returns the server (stopped with shutdown()).
    With DICOM TLS set (tls.py) the port speaks TLS only."""
    ae = build_ae(app.config)
    context = server_context(app.config)
    if context is None:
        return ae.start_server(_address(app.config), block=False, evt_handlers=handlers(app))
    # Not start_server(ssl_context=...): pynetdicom then shakes hands in its one accepting thread, with no
    # timeout, so a peer that connected and said nothing (a plain-TCP probe) kept every other one out,
    # and a failed handshake was dropped without a word. Each connection's own thread does it here.
    server = ae.make_server(
        _address(app.config),
        evt_handlers=handlers(app),
        server_class=ThreadedAssociationServer,
        request_handler=_tls_handler(context),
    )
    ae._servers.append(server)  # as start_server() does: the server's shutdown() takes it off that list
    threading.Thread(target=server.serve_forever, name="dicom-tls-server", daemon=True).start()
    return server


def _tls_handler(context: ssl.SSLContext) -> type[RequestHandler]:
    class TlsFirst(RequestHandler):
        def handle(self) -> None:
            address = self.client_address[0]
            try:
                self.request.settimeout(HANDSHAKE_SECONDS)
                self.request = context.wrap_socket(self.request, server_side=True)  # closed if it fails
                self.request.settimeout(None)  # as pynetdicom keeps a plain connection: its timeouts apply
            except OSError as exc:
                # One line: the peer's address and why, never pynetdicom's nor the ssl module's traceback.
                log.warning(
                    "dicom: connection from %s refused at the TLS handshake: %s", address, handshake_failure(exc)
                )
                return
            super().handle()

    return TlsFirst


def serve(app: Flask, on_listening: Callable[[], None]) -> None:
    """Listen on DICOM_BIND:DICOM_PORT until interrupted (Ctrl-C, or SIGTERM made one). `on_listening` runs
    once the port is bound, so that the node's "listening" line is never followed by a bind error."""
    server = start(app)  # binds the port, or raises OSError
    try:
        on_listening()  # inside: a SIGTERM right after the line is a clean stop too
        # For ever, the server has its own thread, but waking each half second: the kernel may hand SIGTERM
        # to any of the process's threads, and a main thread blocked in a wait without a timeout never ran
        # its handler then. The node went on serving after `docker stop`, killed at the grace's end (137).
        never = threading.Event()
        while not never.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        # A connection that has not asked for an association yet (a load balancer's probe, a port scan)
        # was waited for up to its ACSE timeout, 30 s: past `docker stop`'s 10 s grace, so the node was
        # killed (137). Once no connection is taken any more, such ones are aborted; associations under
        # way, a film half sent, are waited for.
        # A second signal (./scripts/run.sh sends SIGTERM after Ctrl-C, and again as it ends) raised
        # KeyboardInterrupt out of this wait: "Aborted!", exit 1, the associations cut off.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        socketserver.BaseServer.shutdown(server)
        for association in server.active_associations:
            if not association.is_established:
                _end_unestablished(association)
        server.shutdown()  # closes the socket; pynetdicom waits for no association (daemon threads)
        _wait_for_associations(server)


def _wait_for_associations(server) -> None:
    """Let the associations in progress end, within `docker stop`'s 10 s grace; abort those left. Until 5
    December the node exited at once: a film half sent was cut off without a word to its sender."""
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    under_way = [association for association in server.active_associations if association.is_established]
    for association in under_way:
        association.join(max(0.0, deadline - time.monotonic()))
    for association in under_way:
        if association.is_alive():
            log.warning(
                "dicom node stopping: association with %s aborted after %d s",
                association.requestor.ae_title,
                STOP_WAIT_SECONDS,
            )
            association.abort()


def _end_unestablished(association) -> None:
    """End an association not established yet. A connection that has not asked for one (Sta2) is
    closed as its ARTIM timer would close it (PS3.8 9.2: Evt18, AA-2), on its own thread: an A-ABORT
    is no event in that state, and the state machine's "Invalid event 'Evt15' for the current state
    'Sta2'" put a thread's traceback in the node's log at every stop with a probe's connection open.
    One asked for and not yet answered is aborted."""
    dul = association.dul
    state = dul.state_machine.current_state
    if state == "Sta2":
        dul.artim_timer.timeout = 0
    elif state != "Sta1":  # Sta1: already ended, nothing to say
        association.abort(block=False)


def _address(config) -> tuple[str, int]:
    return config["DICOM_BIND"], int(config["DICOM_PORT"])
