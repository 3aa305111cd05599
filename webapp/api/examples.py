"""Example bodies for the OpenAPI document (shown by generators and used by Schemathesis' examples phase)."""

PREDICTION = {
    "id": 42,
    "filename": "chest-pa.jpeg",
    "label": "PNEUMONIA",
    "probabilities": {"NORMAL": 0.081233, "PNEUMONIA": 0.918767},
    "unknown_reason": None,
    "caution": None,
    "model_version": "cxr-pneumonia-2026.11",
    "created_at": "2026-12-01T09:30:12.402913Z",
    "threshold": 0.5,
    "image": {"format": "JPEG", "width": 1858, "height": 1600, "size": 241553, "sha256": "9f2c" + "0" * 60},
    "facts": {},
    "latency_ms": 61.4,
    "user": "dr-lee",
    "source": "api",
}
REJECTED_FILE = {
    "filename": "notes.pdf",
    "status": 415,
    "error": {"code": "unsupported_type", "message": "This is a PDF document, not an image."},
}
BATCH = {"predictions": [PREDICTION]}
PARTIAL_BATCH = {"predictions": [PREDICTION, REJECTED_FILE]}
PAGE = {"predictions": [PREDICTION], "page": 1, "per_page": 50, "total": 1, "pages": 1}
TOKEN = {
    "id": 7,
    "name": "pacs-bridge",
    "state": "active",
    "created_at": "2026-12-01T09:00:00Z",
    "expires_at": "2027-03-01T09:00:00Z",
    "last_used_at": "2026-12-01T09:30:00Z",
    "revoked_at": None,
}
TOKENS = {"tokens": [TOKEN]}
AUDIT_PAGE = {
    "events": [
        {
            "id": 120,
            "time": "2026-12-01T09:31:02.114Z",
            "user": "dr-lee",
            "action": "prediction_viewed",
            "detail": "prediction 42; detail page",
            "ip": "10.0.4.17",
        }
    ],
    "page": 1,
    "per_page": 50,
    "total": 1,
    "pages": 1,
}
