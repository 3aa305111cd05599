"""Keyed hashes of DICOM UIDs: enough to recognise an instance sent twice and to group a study's films,
useless to anyone without the app's secret key (a UID is itself a lookup key into the PACS)."""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app


def keyed_hash(uid: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"dicom-uid:" + uid.strip().encode(), hashlib.sha256).hexdigest()
