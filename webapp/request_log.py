"""One JSON line per request: request id, user id, method, path, status, latency.

Only request metadata is logged: never bodies, file names, query strings or DICOM fields, so
no image data or patient information can reach the logs. The request id is taken from an
incoming X-Request-ID (set by a reverse proxy or an integration script) when it looks like an
id, otherwise generated, and returned in the response so a caller can quote it to IT.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request
from sqlalchemy import inspect

from .logs import install_json_logging

REQUEST_ID_HEADER = "X-Request-ID"
# Anything else (spaces, quotes, long strings) could forge log content or headers: replaced.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("webapp.requests")


def register(app: Flask) -> None:
    install_json_logging()
    # First in line, so requests that the sign-in wall turns away are timed and logged too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_request)
    app.after_request(log_request)


def start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _user_id() -> int | None:
    # Only users the request already loaded: logging must not cost a database query. The id comes
    # from the row's identity, which a rollback leaves in place: reading `user.id` after one (a
    # database gone mid-request) queried the database that had just failed, and turned the 503 into a 500.
    user = g.get("api_user") or g.get("_login_user")
    state = inspect(user, raiseerr=False) if user is not None else None
    if state is None:  # no user, or Flask-Login's anonymous one
        return getattr(user, "id", None)
    return state.identity[0] if state.identity else None


def log_request(response):
    request_id = g.get("request_id") or uuid.uuid4().hex
    started = g.get("request_started")
    response.headers[REQUEST_ID_HEADER] = request_id
    fields = {
        "event": "request",
        "request_id": request_id,
        "user_id": _user_id(),
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2) if started else None,
        "bytes_in": request.content_length or 0,
        "remote_addr": request.remote_addr,
    }
    log.log(_level(response.status_code), "request", extra={"fields": fields})
    return response


def _level(status: int) -> int:
    # A 503 is a deliberate answer (model or database unavailable, reason already logged once);
    # probes repeating it every few seconds must not bury that one error line.
    if status == 503:
        return logging.WARNING
    return logging.ERROR if status >= 500 else logging.INFO
