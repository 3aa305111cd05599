"""OpenAPI 3.1 description of the JSON API, for integration scripts and their generators."""

LABEL = {"type": "string", "enum": ["NORMAL", "PNEUMONIA", "UNKNOWN"]}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
PREDICTION = {
    "type": "object",
    "required": ["id", "filename", "label", "probabilities", "unknown_reason", "model_version", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "filename": {"type": "string", "description": "sanitized original file name"},
        "label": LABEL,
        "probabilities": {
            "type": "object",
            "description": "calibrated; they sum to 1",
            "properties": {"NORMAL": {"type": "number"}, "PNEUMONIA": {"type": "number"}},
        },
        "unknown_reason": {"type": ["string", "null"]},
        "model_version": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "threshold": {"type": "number"},
        "latency_ms": {"type": "number"},
        "image": {"type": "object"},
        "facts": {"type": "object", "description": "non-identifying acquisition facts (DICOM modality, view)"},
        "feedback": {"type": "object"},
    },
}
REJECTED_ITEM = {
    "type": "object",
    "properties": {"filename": {"type": "string"}, "status": {"type": "integer"}, **ERROR["properties"]},
}
FILTERS = [
    {"name": "verdict", "in": "query", "schema": LABEL},
    {"name": "date_from", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "date_to", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "user", "in": "query", "schema": {"type": "string"}},
    {"name": "model_version", "in": "query", "schema": {"type": "string"}},
    {"name": "reviewed", "in": "query", "schema": {"type": "string", "enum": ["yes", "no"]}},
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
]


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def openapi_document(base_path: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CXR Screen API",
            "version": "1",
            "description": "Pneumonia screening of pediatric frontal chest radiographs. "
            "Decision support, not a diagnosis.",
        },
        "servers": [{"url": base_path}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Prediction": PREDICTION, "Error": ERROR},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Screen one or more radiographs",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "every file screened",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"predictions": {"type": "array", "items": PREDICTION}},
                                    }
                                }
                            },
                        },
                        "207": {
                            "description": "a batch where some files were refused; those items carry "
                            "`error` and `status`",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "predictions": {
                                                "type": "array",
                                                "items": {"oneOf": [PREDICTION, REJECTED_ITEM]},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("no file, too many files, or a malformed file"),
                        "401": _error("missing or invalid token"),
                        "413": _error("upload larger than the configured limit, or too large to decode"),
                        "429": _error("rate limit reached: wait for Retry-After seconds"),
                        "415": _error("not a supported image type"),
                        "422": _error("an image we cannot screen (corrupt, truncated, too small ...)"),
                        "503": _error("the model is not available on this server"),
                    },
                },
                "get": {
                    "summary": "List predictions (administrators)",
                    "parameters": FILTERS,
                    "responses": {
                        "200": {"description": "one page, newest first"},
                        "400": _error("invalid filter"),
                        "401": _error("missing or invalid token"),
                        "403": _error("not an administrator"),
                    },
                },
            },
            "/predictions/{id}": {
                "get": {
                    "summary": "One prediction (your own, or any for administrators)",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {
                        "200": {
                            "description": "the prediction",
                            "content": {"application/json": {"schema": PREDICTION}},
                        },
                        "401": _error("missing or invalid token"),
                        "403": _error("not yours"),
                        "404": _error("no such prediction"),
                    },
                },
            },
            "/audit-events": {
                "get": {
                    "summary": "The audit trail, newest first (administrators)",
                    "parameters": [
                        {"name": name, "in": "query", "schema": schema}
                        for name, schema in (
                            ("action", {"type": "string"}),
                            ("user", {"type": "string"}),
                            ("date_from", {"type": "string", "format": "date"}),
                            ("date_to", {"type": "string", "format": "date"}),
                            ("page", {"type": "integer", "minimum": 1}),
                            ("per_page", {"type": "integer", "minimum": 1, "maximum": 200}),
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "{events: [{id, time, user, action, detail, ip}], "
                            "page, per_page, total, pages}"
                        },
                        "400": _error("invalid filter or page"),
                        "401": _error("missing or invalid token"),
                        "403": _error("not an administrator"),
                    },
                },
            },
            "/tokens": {
                "get": {
                    "summary": "Your API tokens: id, name, state, created, expiry, last use (never the secret)",
                    "responses": {"200": {"description": "{tokens: [...]}"}, "401": _error("missing or invalid token")},
                },
            },
            "/tokens/{id}": {
                "delete": {
                    "summary": "Revoke one of your API tokens",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {
                        "200": {"description": "the revoked token"},
                        "401": _error("missing or invalid token"),
                        "404": _error("no such token of yours"),
                    },
                },
            },
        },
    }
