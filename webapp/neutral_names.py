"""Neutral names for predictions stored under the name they were sent with.

Since 2 December an upload is stored as `upload-<id>-<n>.<ext>` unless the site sets
STORE_ORIGINAL_FILENAMES (file names are often a patient's name or record number:
DOE_JANE_MRN555123.dcm). Uploads saved before that, or while a site kept the names, still carry
them after an upgrade: in history, the CSV export and the API. `flask --app wsgi predictions
neutral-names` gives each such row its neutral name, as a new upload would get it; where an old
row's place in its upload is not known it is 1. PACS films have always been `pacs-<receipt>.dcm`.
"""

from __future__ import annotations

import re

from sqlalchemy import select, update

from .extensions import db
from .filenames import anonymous_filename
from .models import SOURCE_DICOM, Prediction, record_audit

NEUTRAL = re.compile(r"upload-\d+-\d+(?:\.[a-z0-9]{1,8})?")
BATCH = 500


def sent_names() -> list[tuple[int, str]]:
    """(id, stored name) of every upload whose stored name is not a neutral one."""
    rows = db.session.execute(
        select(Prediction.id, Prediction.filename).where(Prediction.source != SOURCE_DICOM).order_by(Prediction.id)
    )
    return [(row.id, row.filename) for row in rows if not NEUTRAL.fullmatch(row.filename or "")]


def neutralise(actor: str) -> int:
    """Give every upload stored under its sent name its neutral name, audited as `actor` (one row per
    batch, committed with it); returns how many. The old name goes nowhere else, the audit row included."""
    named = sent_names()
    for start in range(0, len(named), BATCH):
        batch = named[start : start + BATCH]
        for prediction_id, old in batch:
            db.session.execute(
                update(Prediction)
                .where(Prediction.id == prediction_id, Prediction.filename == old)  # unless renamed meanwhile
                .values(filename=anonymous_filename(prediction_id, 1, old))
                .execution_options(synchronize_session=False)
            )
        record_audit(actor, "filenames_neutralised", f"{len(batch)} predictions", f"ids {batch[0][0]}-{batch[-1][0]}")
        db.session.commit()
    return len(named)
