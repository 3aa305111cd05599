"""CSV export of the prediction log (no images; the file name is the only free text we wrote)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from ..inference.labels import UNKNOWN
from ..inference.scores import score_text
from ..models import Prediction, iso_utc

COLUMNS = [
    "id",
    "created_at",
    "user",
    "filename",
    "sha256",
    "format",
    "file_size",
    "width",
    "height",
    "label",
    "p_normal",
    "p_pneumonia",
    "threshold",
    "model_version",
    "unknown_reason",
    "latency_ms",
    "feedback_label",
    "feedback_comment",
    "feedback_by",
    "raw_p_pneumonia",
    # Added after raw_p_pneumonia, for the same reason: existing readers keep their columns.
    "caution",
]


def csv_cell(value) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a leading =, +, - or @ as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _probabilities(p: Prediction) -> tuple[str, str]:
    # An UNKNOWN answer makes no claim about pneumonia: p_normal/p_pneumonia stay empty and the
    # model's score is only in raw_p_pneumonia (appended, like caution, so existing readers keep their columns).
    if p.label == UNKNOWN:
        return "", ""
    return score_text(p.p_normal), score_text(p.p_pneumonia)


def predictions_csv(predictions: Iterable[Prediction]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for p in predictions:
        fb = p.feedback
        writer.writerow(
            [
                csv_cell(v)
                for v in (
                    p.id,
                    iso_utc(p.created_at),  # labelled: a bare time reads as local in a spreadsheet
                    p.submitter,
                    p.filename,
                    p.sha256,
                    p.image_format,
                    p.file_size,
                    p.width,
                    p.height,
                    p.label,
                    *_probabilities(p),
                    score_text(p.threshold),
                    p.model_version,
                    p.unknown_reason,
                    p.latency_ms,
                    fb.label if fb else "",
                    fb.comment if fb else "",
                    fb.user.username if fb else "",
                    score_text(p.p_pneumonia),
                    p.caution,
                )
            ]
        )
    return out.getvalue()
