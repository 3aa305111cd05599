"""Request bodies the API reads: as sent, never content-coded, nor their form parts."""

from __future__ import annotations

from functools import wraps

from flask import request

from .errors import api_error

IDENTITY = ("", "identity")


def plain_body(view):
    """Refuse (415 `unsupported_encoding`, RFC 9110 15.5.16) a body sent with a Content-Encoding such as
    gzip, with gzip in its Transfer-Encoding, or with a base64 file part: nothing here decodes one, and
    read as it came, a compressed form or JSON looked empty, so the client was told "no part named file"
    or "send JSON" and went looking for the wrong mistake (a base64 film: "a text file").

    Put it under the token check and above the argument parser; the view declares its 415.
    """

    @wraps(view)
    def wrapped(*args, **kwargs):
        if request.headers.get("Content-Encoding", "").strip().lower() not in IDENTITY or _compressed_in_transfer():
            return _refused(
                "This server reads request bodies as sent: send the body without Content-Encoding or a "
                "compressing Transfer-Encoding (no gzip)."
            )
        if _encoded_part():
            return _refused(
                "A part of the form was sent with a Content-Transfer-Encoding (base64 ...), which this server "
                "does not decode (RFC 7578 forbids it): send each file's bytes as they are."
            )
        return view(*args, **kwargs)

    return wrapped


def _refused(message: str):
    response = api_error("unsupported_encoding", message, 415)
    response.headers["Accept-Encoding"] = "identity"
    return response


def _compressed_in_transfer() -> bool:
    """gunicorn accepts `Transfer-Encoding: gzip, chunked` (deflate, compress too), undoes only the
    chunking and hands the body on still compressed: the same trap as a Content-Encoding."""
    codings = {coding.strip().lower() for coding in request.headers.get("Transfer-Encoding", "").split(",")}
    return bool(codings - {"", "chunked", *IDENTITY})


# The codings of RFC 2045 that leave a part's bytes as they are.
UNENCODED_PARTS = ("", "binary", "8bit", "7bit")


def _encoded_part() -> bool:
    """A form part sent with `Content-Transfer-Encoding: base64` (RFC 2388 allowed it; RFC 7578 4.7 does
    not): werkzeug hands its bytes on still encoded, and a film read as its base64 text was refused as
    "a text file", a wrong lead. Only file parts are checked: the text fields are the schema's."""
    if request.mimetype != "multipart/form-data":
        return False
    return any(
        part.headers.get("Content-Transfer-Encoding", "").strip().lower() not in UNENCODED_PARTS
        for _, part in request.files.items(multi=True)
    )
