"""Bearer-token authentication for integration scripts."""

from __future__ import annotations

from functools import wraps
from http import HTTPStatus

from flask import g

from ..access import bearer_secret, request_token
from ..auth.sessions import end_cut_off
from ..extensions import db
from ..models import ApiToken
from . import bp
from .errors import api_error

# Answers any token-protected operation can give besides its own (see spec.ERROR_DESCRIPTIONS); 414
# and 431 come from the HTTP server in front of the app (deploy/gunicorn_worker.py), in the same body;
# 503 is `database_unavailable` (errors/handlers.py), unless the view documents its own 503.
TOKEN_RESPONSES = (
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.REQUEST_URI_TOO_LONG,
    HTTPStatus.TOO_MANY_REQUESTS,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.SERVICE_UNAVAILABLE,
)


def token_required(view):
    """Refuse the request without a valid bearer token (401), and document that in the spec.

    Put it right under `@bp.route`, so that the token is checked before any argument is parsed.
    """

    @wraps(view)
    def wrapped(*args, **kwargs):
        if request_token() is None:
            response = api_error("unauthorized", _refusal(), 401)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return view(*args, **kwargs)

    declared = getattr(view, "_apidoc", {}).get("response", {}).get("responses", {})
    for status in TOKEN_RESPONSES:
        if status.value not in declared:  # the view's own description (e.g. `model_unavailable`) stays
            wrapped = bp.alt_response(status.value, response=status.name)(wrapped)
    return wrapped


TOKEN_REQUIRED = "A valid API token is required: Authorization: Bearer <token>. Revoked or expired tokens are refused."
DIRECTORY_OFF = (
    "This token belongs to {name}, an account from the staff directory, and directory sign-in is switched off "
    "on this CXR Screen, so its tokens are refused (and were revoked). An administrator can make it a local "
    "account (flask --app wsgi users make-local {name}) and issue it a new token."
)


def _refusal() -> str:
    """Why the request's token is refused: a directory account's while directory sign-in is switched off
    says so (and ends that account's access, once); anything else gets the general answer."""
    secret = bearer_secret()
    owner = ApiToken.cut_off_owner(secret) if secret else None
    if owner is None:
        return TOKEN_REQUIRED
    if end_cut_off(owner):
        db.session.commit()
    return DIRECTORY_OFF.format(name=owner.username)


def admin_required(view):
    """Refuse (403) a token whose user is not an administrator, and document that. Under token_required."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not g.api_user.is_admin:
            return api_error("forbidden", "This part of the API is for administrators' tokens.", 403)
        return view(*args, **kwargs)

    return bp.alt_response(403, response="FORBIDDEN")(wrapped)


def admin_token_required(view):
    """`token_required` then `admin_required`: the guard of every administrators' operation. Under `@bp.route`."""
    return token_required(admin_required(view))
