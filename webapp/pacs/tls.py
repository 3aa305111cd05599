"""DICOM over TLS (PS3.15 Annex B.1, the Basic TLS Secure Transport Connection Profile): the one home of
the SSL contexts of the node (listener.py) and of the delivery of results (sender.py), and of what a
failed handshake is called in their logs and on the outbox page.

Off while DICOM_TLS_CERT_FILE, DICOM_TLS_KEY_FILE and DICOM_TLS_CA_FILE are all unset. With the node's
certificate and key set, its port speaks TLS only and results are sent over TLS with the same pair as
the client certificate; with the CA file set too, the node asks every peer for a certificate the CA
signed, and a PACS's certificate is checked against the CA file (without it: the system's CAs).
"""

from __future__ import annotations

import logging
import ssl

from ..env import ConfigError

CERT, KEY, CA = "DICOM_TLS_CERT_FILE", "DICOM_TLS_KEY_FILE", "DICOM_TLS_CA_FILE"
# A peer that connects and never says a word must not hold a thread for long.
HANDSHAKE_SECONDS = 10


def server_context(config) -> ssl.SSLContext | None:
    """The node's context, or None when TLS is off."""
    return _context(config, ssl.PROTOCOL_TLS_SERVER)


def client_context(config) -> ssl.SSLContext | None:
    """A delivery's context, or None when TLS is off. Built for each delivery, so a renewed
    certificate is used without a restart, and it keeps why its handshake failed (`failure`)."""
    context = _context(config, ssl.PROTOCOL_TLS_CLIENT)
    if context is not None:
        context.failure = None
        context.sslsocket_class = _KeepsFailure
    return context


def check(config) -> None:
    """Raise ConfigError, naming the variable, when the settings cannot make the contexts: at start-up,
    not at the first film or result."""
    _context(config, ssl.PROTOCOL_TLS_SERVER)


def _context(config, protocol: int) -> ssl.SSLContext | None:
    cert, key, ca = (config.get(name) for name in (CERT, KEY, CA))
    if not (cert or key or ca):
        return None
    for name, value in ((CERT, cert), (KEY, key)):
        if not value:
            # Half set is no TLS at all, which the administrator who set the rest did not ask for.
            raise ConfigError(f"{name} must be set too: DICOM TLS needs {CERT} and {KEY} (PEM), {CA} optional")
    context = ssl.SSLContext(protocol)  # a client's checks the server's certificate and host name by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Checked alone first, so that a file that is no certificate is told apart from a key that does not match.
    _load(lambda: ssl.SSLContext(protocol).load_verify_locations(cert), CERT, cert, "holds no PEM certificate")
    _load(
        # A key under a passphrase would make OpenSSL ask for it on the terminal: an empty one refuses it.
        lambda: context.load_cert_chain(cert, key, password=b""),
        KEY,
        key,
        f"is not the unencrypted PEM private key of {CERT}'s certificate",
    )
    if ca:
        _load(lambda: context.load_verify_locations(ca), CA, ca, "holds no PEM certificate")
        context.verify_mode = ssl.CERT_REQUIRED  # on the node: a peer without a certificate is refused
    elif protocol == ssl.PROTOCOL_TLS_CLIENT:
        context.load_default_certs()
    return context


def _load(load, name: str, path: str, wrong: str) -> None:
    try:
        load()
    except ssl.SSLError:
        raise ConfigError(f"{name}: {path} {wrong}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


class _KeepsFailure(ssl.SSLSocket):
    """pynetdicom logs a failed handshake with a traceback and then says only that the association was
    not established: the delivery keeps the error, for the outbox to say why. With TLS 1.3 the PACS's
    refusal of our certificate comes at the first read, after connect() returned."""

    def connect(self, address) -> None:
        try:
            super().connect(address)
        except ssl.SSLError as exc:
            self.context.failure = exc
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self.context.failure = self.context.failure or exc
            raise


class _NoHandshakeTraceback(logging.Filter):
    """pynetdicom logs a failed handshake as a line naming the error, then again with its traceback: the
    line stays, the traceback goes (the delivery's own line says what the failure means)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ssl.SSLError))


for _name in ("pynetdicom.transport", "pynetdicom.dul"):  # connect(), and the first read under TLS 1.3
    logging.getLogger(_name).addFilter(_NoHandshakeTraceback())


# What OpenSSL's reasons mean to an administrator, by what went wrong.
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"}
_NO_CERTIFICATE = {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}


def handshake_failure(exc: OSError) -> str:
    """Why a TLS handshake failed, from either end, in one line."""
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake within {HANDSHAKE_SECONDS} s"
    if isinstance(exc, ssl.SSLEOFError):
        return "it closed the connection during the handshake (a port probe, or a peer that refused it)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted ({exc.verify_message}; {CA} holds the CAs trusted here)"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if reason in _NOT_TLS:
        return f"it does not speak TLS ({reason}): plain DICOM, or TLS switched off at that end"
    if reason in _NO_CERTIFICATE:
        return "it presented no certificate"
    if "ALERT" in reason:
        return f"it refused this node's certificate or TLS version ({reason}): does it trust the CA of {CERT}?"
    return f"TLS handshake failed ({reason})"
