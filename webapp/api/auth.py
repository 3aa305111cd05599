"""Bearer-token authentication for integration scripts."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from ..models import ApiToken
from .errors import api_error


def token_required(view):
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

    return wrapped
