"""The site operating point in force: the one query both screening and validation need.

Adopting and withdrawing one is validation/site.py's job; screening only asks which is in force.
Screening asks on every upload and the answer changes a few times a year, so each process keeps
it for OPERATING_POINT_SECONDS: a change made in another process (a second worker, the queue
worker, another machine) applies there within that time, and at once in the process that made it.
Every prediction records the operating point it was made at, so the log stays exact either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from .extensions import db
from .models import SiteCalibration

OPERATING_POINT_SECONDS = 5.0
_CACHE = "site_operating_point"  # app.extensions key: one cache per app, so per database


@dataclass(frozen=True)
class OperatingPoint:
    calibration_id: int
    threshold: float


def active_calibration(model_version: str) -> SiteCalibration | None:
    """The latest operating point not withdrawn for `model_version`, or None (the card's threshold applies)."""
    return db.session.scalar(
        select(SiteCalibration)
        .where(SiteCalibration.model_version == model_version, SiteCalibration.withdrawn_at.is_(None))
        .order_by(SiteCalibration.id.desc())
        .limit(1)
    )


def operating_point(model_version: str) -> OperatingPoint | None:
    """What screening applies: `active_calibration`, read at most every OPERATING_POINT_SECONDS."""
    cache = current_app.extensions.setdefault(_CACHE, {})
    now = time.monotonic()
    read_at, point = cache.get(model_version, (None, None))
    if read_at is None or now - read_at > OPERATING_POINT_SECONDS:
        calibration = active_calibration(model_version)
        point = OperatingPoint(calibration.id, calibration.threshold) if calibration else None
        cache[model_version] = (now, point)
    return point


def forget_operating_point() -> None:
    """Called once an operating point is adopted or withdrawn: this process reads it afresh."""
    current_app.extensions.pop(_CACHE, None)
