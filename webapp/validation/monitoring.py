"""Use after go-live, week by week: films, verdict mix, UNKNOWN reasons, agreement with the
radiologists, and drift of the model's scores from the validation reference.

The reference is the latest finished validation run of the model version in service (the site's
own labelled films) with at least MIN_REFERENCE_FILMS scored films. Drift is the population stability index
(PSI, metrics.py) of a week's calibrated P(pneumonia), chest-radiograph probability and feature
distance against that run's; a week passes the alert level when any of the three does, over at
least MIN_FILMS films.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from ..extensions import db
from ..inference.labels import VERDICTS
from ..models import ITEM_DONE, RUN_DONE, Feedback, Prediction, ValidationItem, ValidationRun
from . import metrics
from .report import reason_category

# PSI: below 0.1 no real change, 0.1-0.25 a moderate shift, above 0.25 a major one (the usual reading).
PSI_ALERT = 0.25
# Sampling noise alone gives a PSI of about (bins - 1) * (1/n + 1/n_reference): 0.1 for 100 films
# against a 600-film reference, 0.3 for 30 films. Below this many films a week gets no statistic.
MIN_FILMS = 100
# The noise term is the reference's as much as the week's: against a 100-film run, weeks of 100
# films drawn from the very same scores passed the alert level on one of the three scores in about
# half the weeks (23% per score; 20-film trial runs did in four weeks out of five). From 500 films
# on, 2% per score, 6% for any of the three, close to the week's own noise (1.5% per score with
# an endless reference). A smaller run is no reference.
MIN_REFERENCE_FILMS = 500
SCORES = ("p_pneumonia", "chest_probability", "feature_distance")
# How many weeks one request may ask for (two years), and how many it gets when it does not say.
DEFAULT_WEEKS, MAX_WEEKS = 12, 104


def week_start(moment: datetime) -> date:
    day = moment.date()
    return day - timedelta(days=day.weekday())


def reference_run(model_version: str) -> ValidationRun | None:
    """The latest finished run of `model_version` with enough scored films to measure drift against."""
    scored = (
        select(func.count())
        .where(ValidationItem.run_id == ValidationRun.id, ValidationItem.state == ITEM_DONE)
        .scalar_subquery()
    )
    return db.session.scalar(
        select(ValidationRun)
        .where(
            ValidationRun.status == RUN_DONE,
            ValidationRun.model_version == model_version,
            scored >= MIN_REFERENCE_FILMS,
        )
        .order_by(ValidationRun.id.desc())
        .limit(1)
    )


def reference_scores(run: ValidationRun) -> dict[str, list[float]]:
    rows = db.session.execute(
        select(*(getattr(ValidationItem, s) for s in SCORES)).where(
            ValidationItem.run_id == run.id, ValidationItem.state == ITEM_DONE
        )
    ).all()
    return {score: [row[i] for row in rows if row[i] is not None] for i, score in enumerate(SCORES)}


def weekly(model_version: str, weeks: int = DEFAULT_WEEKS, now: datetime | None = None) -> dict:
    """The monitoring figures of the last `weeks` weeks (Monday to Sunday, UTC) for one model version."""
    now = now or datetime.now(UTC)
    first = week_start(now) - timedelta(weeks=weeks - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    rows = db.session.execute(
        select(
            Prediction.created_at,
            Prediction.label,
            Prediction.unknown_reason,
            *(getattr(Prediction, s) for s in SCORES),
            Feedback.label,
        )
        .outerjoin(Feedback, Feedback.prediction_id == Prediction.id)
        .where(Prediction.created_at >= since, Prediction.model_version == model_version)
    ).all()
    by_week: dict[date, list] = defaultdict(list)
    for row in rows:
        by_week[week_start(row[0])].append(row)
    run = reference_run(model_version)
    reference = reference_scores(run) if run else None
    result = {
        "model_version": model_version,
        "reference_run_id": run.id if run else None,
        "psi_alert_level": PSI_ALERT,
        "min_films_for_drift": MIN_FILMS,
        "min_reference_films": MIN_REFERENCE_FILMS,
        "weeks": [
            week_figures(first + timedelta(weeks=i), by_week[first + timedelta(weeks=i)], reference)
            for i in range(weeks)
        ],
    }
    return result


def week_figures(start: date, rows: list, reference: dict[str, list[float]] | None) -> dict:
    films = len(rows)
    verdicts = Counter(row[1] for row in rows)
    reasons = Counter(reason_category(row[2]) for row in rows if row[1] == "UNKNOWN")
    agreement = metrics.reading_agreement((row[1], row[-1]) for row in rows if row[-1])
    drift = {}
    if reference is not None and films >= MIN_FILMS:
        for i, score in enumerate(SCORES):
            values = [row[3 + i] for row in rows if row[3 + i] is not None]
            enough = len(values) >= MIN_FILMS and len(reference[score]) >= MIN_REFERENCE_FILMS
            drift[score] = metrics.population_stability_index(reference[score], values) if enough else None
    return {
        "week": start.isoformat(),
        "films": films,
        "verdicts": {v: verdicts.get(v, 0) for v in VERDICTS},
        "unknown_rate": verdicts.get("UNKNOWN", 0) / films if films else None,
        "unknown_reasons": {reason: count / films for reason, count in reasons.items()},
        "reviewed": agreement["reviewed"],
        "reviewed_unknown": agreement["reviewed_unknown"],
        "agreement": agreement["agreement"],
        "psi": drift,
        "drift_alert": any(value is not None and value > PSI_ALERT for value in drift.values()),
    }


def drift_alert(model_version: str, now: datetime | None = None) -> dict | None:
    """The latest of this week and last week that passes the alert level, or None."""
    figures = weekly(model_version, weeks=2, now=now)
    alerts = [week for week in figures["weeks"] if week["drift_alert"]]
    return alerts[-1] if alerts else None
