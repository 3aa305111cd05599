"""A multipart body werkzeug could not read: one test for the API and the pages that take files.

werkzeug's form parser gives up silently on a body whose parts it cannot find or decode (a part
header in raw Latin-1 bytes, as curl sends `-F file=@élève.jpg` from a Latin-1 file system; a
boundary other than the Content-Type's): the request then looks like a form sent empty, and each
place that reads it blamed what it missed first (no file part, or the CSRF token: "this form had
expired"). Each says instead that nothing could be read, and why, in its own words.

A body sent with neither a Content-Length nor chunked encoding is read as empty (RFC 9112 6.3; gunicorn
and werkzeug both do), and was told the same boundary story: found sending a hand-built request to the
live server. It is told what it lacks instead.
"""

from __future__ import annotations

from flask import Request
from flask_login import current_user

# Why werkzeug reads no part, for a client to act on (the API's words; pages add their own).
WHY_NO_PART = (
    "the boundary in its Content-Type must be the one in the body, and each part's headers must be UTF-8 "
    "(a file name in another encoding goes in filename*=UTF-8''..., RFC 7578)"
)
WHY_NO_LENGTH = (
    "the request had neither a Content-Length nor Transfer-Encoding: chunked, so its body is read as empty "
    "(send one of the two, as browsers and HTTP libraries do)"
)


def why_unreadable(request: Request) -> str:
    return WHY_NO_LENGTH if _unframed(request) else WHY_NO_PART


def _unframed(request: Request) -> bool:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return request.content_length is None and not chunked


def unreadable(request: Request) -> bool:
    """Whether `request` is a multipart body with something in it of which no part could be read."""
    return (
        request.mimetype == "multipart/form-data"
        and not request.files
        and not request.form
        and request.content_length != 0
    )


def answered_by_the_page(request: Request) -> bool:
    """For a page's CSRF error handler: whether the token is missing only because werkzeug could not
    read the body it was in, and the page may answer that itself. Not for someone signed out (the
    sign-in page comes first) or who must first replace an administrator's password."""
    return current_user.is_authenticated and not current_user.must_change_password and unreadable(request)
