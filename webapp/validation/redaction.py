"""Removing the films' names and pictures from an ended validation run, keeping its figures.

A run keeps each archive member's name (often a patient's name) and each film's review copy (burned-in
text stays on it) so the site can find its misclassified films while it reviews the report. A run a
site threshold was adopted from can never be deleted (deletion.py: it is that threshold's evidence),
and a site may want any other run's figures kept as a record. Redacting ends what is personal and keeps
the evidence: each name becomes `film <id>` (the film's id, as the audit trail and the film's address
already name it), in the films' rows, in the report's lists of refused and duplicate files and in the
run's error text; review copies and heat maps are deleted. Truths, answers, scores and every figure stay,
so the report, the per-film CSV, the operating points and the monitoring reference read as before.

One UPDATE renames the films and says, by its row count, whether anything was still there to redact: a
second redaction (or one racing the first) changes nothing and writes no audit row.
"""

from __future__ import annotations

from sqlalchemy import String, cast, literal, or_, select, update

from ..extensions import db
from ..models import ValidationItem, ValidationRun, record_audit
from ..refusal import Refusal
from .ended import ended_run, still_working


class RedactionRefused(Refusal):
    """A validation run whose films cannot be redacted (now, or at all)."""


FILM_NAME_PREFIX = "film "  # the one spelling of a redacted name, in Python and in SQL below


def film_name(item_id: int) -> str:
    return f"{FILM_NAME_PREFIX}{item_id}"


def redaction_problem(run: ValidationRun) -> RedactionRefused | None:
    """Why `run` cannot be redacted now, or None: the one rule for the page's button and every caller."""
    return still_working(run, RedactionRefused, "cancel it or wait for it to end, then redact it.")


def redact_run(run_id: int, actor: str) -> int:
    """Replace the names of the ended run `run_id`'s films and delete their review copies and heat maps,
    audited as `actor`; returns how many films were changed (0: nothing was left to redact). Raises
    RedactionRefused (404 no such run, 409 still working) having changed nothing."""
    run = ended_run(run_id, RedactionRefused, redaction_problem)
    try:
        films = select(ValidationItem.entry, ValidationItem.id).where(ValidationItem.run_id == run_id)
        names = dict(db.session.execute(films).all())
        new_name = literal(FILM_NAME_PREFIX) + cast(ValidationItem.id, String)
        changed = db.session.execute(
            update(ValidationItem)
            .where(
                ValidationItem.run_id == run_id,
                or_(
                    ValidationItem.entry != new_name,
                    ValidationItem.review_png.is_not(None),
                    ValidationItem.heatmap_png.is_not(None),
                ),
            )
            .values(entry=new_name, review_png=None, heatmap_png=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            renamed = {old: film_name(item_id) for old, item_id in names.items()}
            run.metrics = _redacted_metrics(run.metrics, renamed)
            run.error = _redacted_text(run.error, renamed)
            record_audit(actor, "validation.redact", f"validation run {run_id}", f"{changed} films")
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return changed


def _redacted_metrics(metrics: dict | None, renamed: dict[str, str]) -> dict | None:
    """The report's figures with the names in its lists replaced (a new dict: the column sees the change)."""
    if not metrics:
        return metrics

    def name(old: str) -> str:
        return renamed.get(old, "film (name removed)")

    kept = dict(metrics)
    kept["refused_files"] = [{**f, "entry": name(f["entry"])} for f in metrics.get("refused_files", [])]
    kept["duplicates"] = [
        {**d, "entry": name(d["entry"]), "same_as": name(d["same_as"])} for d in metrics.get("duplicates", [])
    ]
    return kept


def _redacted_text(text: str | None, renamed: dict[str, str]) -> str | None:
    """A failed run's error with any film name in it replaced (an exception's text may quote one)."""
    if not text:
        return text
    for old in sorted(renamed, key=len, reverse=True):  # a longer name before any name it contains
        if old in text:
            text = text.replace(old, renamed[old])
    return text
