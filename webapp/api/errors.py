"""The one error body of the API, `{"error": {"code", "message"}}`, and how validation failures reach it."""

from __future__ import annotations

from collections.abc import Mapping

from flask import jsonify
from marshmallow import ValidationError, fields
from webargs.flaskparser import FlaskParser

from ..multipart import unreadable, why_unreadable


def api_error(code: str, message: str, status: int, **extra):
    response = jsonify(error={"code": code, "message": message}, **extra)
    response.status_code = status
    return response


class ApiError(Exception):
    """Raised anywhere in an API view; the blueprint answers it with the error body."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def describe(messages, field: str = "") -> str:
    """webargs/marshmallow messages ({location: {field: [text]}}) as one sentence naming each field."""
    if isinstance(messages, Mapping):
        # The top level is the location (query, files ...): clients know their parameters by name only.
        return " ".join(
            describe(
                value, field if key in ArgumentParser.__location_map__ else ".".join(filter(None, (field, str(key))))
            )
            for key, value in messages.items()
        )
    texts = messages if isinstance(messages, list | tuple) else [messages]
    text = " ".join(describe(t) if isinstance(t, Mapping) else str(t) for t in texts)
    return f"{field}: {text}" if field else text


class ArgumentParser(FlaskParser):
    """Request parsing for the API: a schema violation is a 400 with the shared error body.

    The schema may name its error code (`error_code = "invalid_filter"`); the default is
    `invalid_request`. 400, not webargs' 422, because 422 already means "an image we cannot screen".
    """

    DEFAULT_VALIDATION_STATUS = 400

    def load_querystring(self, req, schema):
        """Refuse a one-value parameter given several times (`verdict=NORMAL&verdict=PNEUMONIA`): read
        as its first value, the answer silently left the others out, and the client took it for both."""
        repeated = {
            name: ["Give one value, not several."]
            for name, field in schema.fields.items()
            if not isinstance(field, fields.List) and len(req.args.getlist(field.data_key or name)) > 1
        }
        if repeated:
            raise ValidationError(repeated)
        return super().load_querystring(req, schema)

    def load_files(self, req, schema):
        """A multipart body werkzeug could not read (multipart.py) was answered as one that had sent no
        part with a filename, which it had."""
        if unreadable(req):
            message = f"No part could be read from the multipart body: {why_unreadable(req)}."
            raise ApiError(getattr(schema, "error_code", "invalid_request"), message, 400)
        return super().load_files(req, schema)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        raise ApiError(
            getattr(schema, "error_code", "invalid_request"),
            describe(error.messages),
            error_status_code or self.DEFAULT_VALIDATION_STATUS,
        )
