"""Bearer-token authentication for integration scripts."""

from __future__ import annotations

from functools import wraps
from http import HTTPStatus

from flask import g, request

from ..models import ApiToken
from . import bp
from .errors import api_error

# Answers any token-protected operation can give besides its own (see spec.ERROR_DESCRIPTIONS).
TOKEN_RESPONSES = (HTTPStatus.UNAUTHORIZED, HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.INTERNAL_SERVER_ERROR)


def token_required(view):
    """Refuse the request without a valid bearer token (401), and document that in the spec.

    Put it right under `@bp.route`, so that the token is checked before any argument is parsed.
    """

    @wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = ApiToken.user_for(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if user is None:
            response = api_error("unauthorized", "A valid API token is required: Authorization: Bearer <token>.", 401)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        g.api_user = user
        return view(*args, **kwargs)

    for status in TOKEN_RESPONSES:
        wrapped = bp.alt_response(status.value, response=status.name)(wrapped)
    return wrapped
