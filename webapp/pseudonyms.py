"""Keyed hashes (HMAC-SHA256 with the app's SECRET_KEY): enough to recognise a value seen before, useless
to anyone without the key. For DICOM UIDs (a UID is itself a lookup key into the PACS) and for the names
typed at sign-in, which the throttle counts but must not keep (one may be a password in the wrong field).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app


def keyed_hash(value: str, purpose: str = "dicom-uid") -> str:
    """The hash of `value` for `purpose`: each purpose its own domain, so equal values do not match across."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"{purpose}:".encode() + value.strip().encode(), hashlib.sha256).hexdigest()
