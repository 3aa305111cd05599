"""Figures for the admin summary: verdicts per day and model/radiologist agreement per version."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

from sqlalchemy import select

from ..extensions import db
from ..local_time import day_bounds, display_zone
from ..models import LABELS, Feedback, Prediction, as_utc
from ..validation.metrics import reading_agreement


def verdicts_per_day(days: int = 30) -> list[dict]:
    """One entry per calendar day in the display zone (the days the history's filters mean), quiet
    days included, so the chart's x axis is real time."""
    zone = display_zone()
    today = datetime.now(zone).date()
    first = today - timedelta(days=days - 1)
    since, _ = day_bounds(first, None, zone)
    rows = db.session.execute(
        select(Prediction.created_at, Prediction.label).where(Prediction.created_at >= since)
    ).all()
    counts: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(LABELS, 0))
    for created_at, label in rows:
        counts[as_utc(created_at).astimezone(zone).date()][label] += 1
    return [{"day": (first + timedelta(days=i)).isoformat(), **counts[first + timedelta(days=i)]} for i in range(days)]


def agreement_per_version() -> list[dict]:
    rows = db.session.execute(
        select(Prediction.model_version, Prediction.label, Feedback.label).join(
            Feedback, Feedback.prediction_id == Prediction.id
        )
    ).all()
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for version, label, reading in rows:
        pairs[version].append((label, reading))
    return [{"model_version": v, **reading_agreement(p)} for v, p in sorted(pairs.items())]
