"""Requests refused for their HTTP itself, one table for both places that meet them.

gunicorn refuses a request line too long, too many or too large header fields, or bytes that are
not HTTP before the app sees them; its worker class (deploy/gunicorn_worker.py) answers those. A
chunked body is parsed only as the view reads it, so its faults are raised inside the app
(handlers.py). Both answer with the same status, code and message from here.
"""

from __future__ import annotations

from gunicorn.http import errors

# gunicorn's own status for each refusal (gunicorn.workers.base.Worker.handle_error).
STATUS_OF = {
    errors.LimitRequestLine: (
        414,
        "URI Too Long",
        "uri_too_long",
        "The request line (method, address and query string) is longer than this server accepts.",
    ),
    errors.LimitRequestHeaders: (
        431,
        "Request Header Fields Too Large",
        "headers_too_large",
        "The request carries more header fields, or a longer one, than this server accepts.",
    ),
    # A Transfer-Encoding gunicorn does not know (RFC 9112 6.1: 501), and an Expect other than
    # 100-continue (RFC 9110 10.1.1: 417): gunicorn's HTML page until a pen-test sent them.
    errors.UnsupportedTransferCoding: (
        501,
        "Not Implemented",
        "unsupported_transfer_coding",
        "The request's Transfer-Encoding is not one this server reads: send the body as it is "
        "(Content-Length) or chunked.",
    ),
    errors.ExpectationFailed: (
        417,
        "Expectation Failed",
        "expectation_failed",
        "The request's Expect header asks for something this server does not do: only 100-continue is understood.",
    ),
}
MALFORMED = (
    errors.InvalidRequestLine,
    errors.InvalidRequestMethod,
    errors.InvalidHTTPVersion,
    errors.InvalidHeader,
    errors.InvalidHeaderName,
    errors.ObsoleteFolding,
    errors.InvalidChunkSize,
    errors.ChunkMissingTerminator,
    errors.InvalidChunkExtension,
)
BAD_REQUEST = (400, "Bad Request", "bad_request", "The request is not well-formed HTTP.")
# Subclasses of InvalidHeader(Name) raised for a header the app tried to send: the app's fault.
APP_FAULTS = (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)


def refusal(exc: BaseException) -> tuple[int, str, str, str] | None:
    """(status, reason, code, message) for a request gunicorn refuses to parse, else None."""
    if isinstance(exc, APP_FAULTS):
        return None
    for kind, answer in STATUS_OF.items():
        if isinstance(exc, kind):
            return answer
    if isinstance(exc, MALFORMED):
        return BAD_REQUEST
    return None
