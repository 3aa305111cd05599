"""Request bodies the API reads: as sent, never content-coded."""

from __future__ import annotations

from functools import wraps

from flask import request

from .errors import api_error

IDENTITY = ("", "identity")


def plain_body(view):
    """Refuse (415 `unsupported_encoding`, RFC 9110 15.5.16) a body sent with a Content-Encoding such as
    gzip, or with gzip in its Transfer-Encoding: nothing here decodes one, and read as it came, a
    compressed form or JSON looked empty, so the client was told "no part named file" or "send JSON"
    and went looking for the wrong mistake.

    Put it under the token check and above the argument parser; the view declares its 415.
    """

    @wraps(view)
    def wrapped(*args, **kwargs):
        if request.headers.get("Content-Encoding", "").strip().lower() not in IDENTITY or _compressed_in_transfer():
            response = api_error(
                "unsupported_encoding",
                "This server reads request bodies as sent: send the body without Content-Encoding or a "
                "compressing Transfer-Encoding (no gzip).",
                415,
            )
            response.headers["Accept-Encoding"] = "identity"
            return response
        return view(*args, **kwargs)

    return wrapped


def _compressed_in_transfer() -> bool:
    """gunicorn accepts `Transfer-Encoding: gzip, chunked` (deflate, compress too), undoes only the
    chunking and hands the body on still compressed: the same trap as a Content-Encoding."""
    codings = {coding.strip().lower() for coding in request.headers.get("Transfer-Encoding", "").split(",")}
    return bool(codings - {"", "chunked", *IDENTITY})
