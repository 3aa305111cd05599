"""Bearer-token authentication for integration scripts."""

from __future__ import annotations

from functools import wraps

from ..access import request_token
from .errors import api_error


def token_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if request_token() is None:
            response = api_error(
                "unauthorized",
                "A valid API token is required: Authorization: Bearer <token>. Revoked or expired tokens are refused.",
                401,
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return view(*args, **kwargs)

    return wrapped
