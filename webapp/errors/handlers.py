"""Every failure a user can meet becomes a clear page (or JSON for the API), never a stack trace."""

import contextlib
import errno
import logging

from flask import Flask, flash, g, make_response, redirect, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from gunicorn.http.errors import ParseException
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wsgi import LimitedStream

from ..api.errors import api_error
from ..extensions import db, login_manager
from ..ratelimits import retry_after_seconds
from ..refusal import DATABASE_UNAVAILABLE, STORAGE_FULL, database_reason
from ..responses import local_url, wants_json
from ..security import PUBLIC_ENDPOINTS, signed_out
from .http_refusals import BAD_REQUEST, refusal

log = logging.getLogger(__name__)

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please sign in.",
    403: "You do not have access to this page.",
    404: "There is nothing at this address.",
    405: "That action is not allowed here.",
    413: "The upload is larger than this server accepts ({max_mb} MB).",
    429: "Too many requests. Please wait a moment and try again.",
    500: "Something went wrong on our side. The error was logged; please try again.",
}


# Long enough for a database restart or a replica's reconnection, short enough for a clinician to wait.
DATABASE_RETRY_AFTER_SECONDS = 30

TOO_MANY_PARTS = (
    "The upload is within the size limit but its form has too many parts or a text field too long. "
    "Send the films as file parts only."
)


def _respond(status: int, code: str, message: str):
    if wants_json():
        return api_error(code, message, status)
    return render_template("errors/error.html", status=status, message=message), status


def handle_http(exc: HTTPException):
    from flask import current_app

    status = exc.code or 500
    # A message written for this refusal (e.g. which parameter is out of range) beats the generic one.
    specific = exc.description if exc.description != type(exc).description else None
    message = specific or MESSAGES.get(status, exc.description or "")
    if status == 413 and not specific and not _over_the_size_limit(current_app.config["MAX_CONTENT_LENGTH"]):
        # Not the size: werkzeug's form parser also answers 413 for too many parts or a long text field.
        message = TOO_MANY_PARTS
    message = message.format(max_mb=current_app.config["MAX_UPLOAD_MB"])
    code = {413: "too_large"}.get(status, (exc.name or "error").lower().replace(" ", "_"))
    response = make_response(_respond(status, code, message))
    # Keep what the exception says in headers: `Allow` on a 405, `WWW-Authenticate`, `Retry-After`.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _over_the_size_limit(limit: int) -> bool:
    """Whether the body is over the upload limit: its Content-Length, or for a chunked body (which has
    none) werkzeug's stream of it stopping at the limit. A chunked upload over the limit was told it had
    "too many parts" (found sending one to the live server)."""
    if request.content_length is not None:
        return request.content_length > limit
    stream = request.stream  # the one the form parser read: werkzeug caches it
    return isinstance(stream, LimitedStream) and stream.is_exhausted


def handle_csrf(exc: CSRFError):
    if request.endpoint == "auth.login" and not wants_json():
        # Nothing to lose but what was typed: the sign-in page again (its `next` kept) with a fresh token.
        flash("The sign-in page had expired (or this browser refuses cookies). Please sign in again.", "error")
        return redirect(local_url(request.full_path if request.query_string else request.path), 303)
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        # No session behind the form (signed out, the cookie gone): that, not the token, is the news.
        return signed_out()
    return _respond(
        400,
        "csrf_failed",
        "Nothing was saved: this form had expired (for example after signing in again in another tab) "
        "or was not sent from this site. Go back, reload the page and send the form again.",
    )


def handle_rate_limited(exc: RateLimitExceeded):
    response = make_response(_respond(429, "too_many_requests", MESSAGES[429]))
    response.headers["Retry-After"] = str(retry_after_seconds())
    return response


def handle_unstorable(exc: DataError):
    """A value the database cannot hold (PostgreSQL: a NUL, a string past its column) that no form
    rule caught: the request's fault, so a 400 that says what to fix, and nothing half-written."""
    db.session.rollback()
    log.warning("database refused a value on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
    return _respond(
        400,
        "unstorable_value",
        "A value in the request cannot be stored: it is too long or contains a character that is not allowed.",
    )


def handle_database_unavailable(exc: OperationalError):
    """The database server is down, unreachable (its name does not resolve, the network is cut), or
    refuses the connection; SQLite's file cannot be opened, stays locked, or its disk is full. Not the
    request's fault and not a bug: a 503 that says so, and one log line for IT instead of a stack
    trace per request."""
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    log.error(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.path,
        type(exc.orig or exc).__name__,
        database_reason(exc),
    )
    # The page's header shows the signed-in user, whose row cannot be read now: shown signed out.
    g._login_user = login_manager.anonymous_user()
    response = make_response(_respond(503, "database_unavailable", DATABASE_UNAVAILABLE))
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def handle_os_error(exc: OSError):
    """A disk that filled (or a quota reached) while the request wrote a file: not the request's fault
    and not a bug, so a 503 that says so and one log line, not a 500 and a stack trace
    (found on a full tmpfs INSTANCE_DIR: a validation archive upload answered "Something went wrong
    on our side"). The writer has already removed what it had half-written. Any other OSError is a
    fault of ours."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return handle_unexpected(exc)
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    log.error("disk full on %s %s: %s", request.method, request.path, exc)
    return _respond(503, "storage_full", STORAGE_FULL)


def handle_malformed_body(exc: ParseException):
    """gunicorn parses a chunked body only as the view reads it, so a bad chunk size, a missing chunk
    terminator or a malformed trailer is raised inside the app, past the worker that answers such
    requests before they reach it (deploy/gunicorn_worker.py): the client's fault, answered from the
    table that worker answers from (http_refusals.py: 400, or 431 for an oversized trailer), not as a
    500 with a stack trace logged."""
    db.session.rollback()
    status, _reason, code, message = refusal(exc) or BAD_REQUEST
    log.warning("malformed request body on %s %s: %s", request.method, request.path, type(exc).__name__)
    return _respond(status, code, message)


def handle_unexpected(exc: Exception):
    db.session.rollback()  # leave nothing half-written behind the error
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _respond(500, "internal_error", MESSAGES[500])


def register(app: Flask) -> None:
    app.register_error_handler(CSRFError, handle_csrf)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.register_error_handler(DataError, handle_unstorable)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(ParseException, handle_malformed_body)
    app.register_error_handler(OSError, handle_os_error)
    app.register_error_handler(InternalServerError, handle_unexpected)
    app.register_error_handler(Exception, handle_unexpected)
