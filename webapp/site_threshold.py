"""The site operating point in force: the one query both screening and validation need.

Adopting and withdrawing one is validation/site.py's job; screening only asks which is in force.
"""

from __future__ import annotations

from sqlalchemy import select

from .extensions import db
from .models import SiteCalibration


def active_calibration(model_version: str) -> SiteCalibration | None:
    """The latest operating point not withdrawn for `model_version`, or None (the card's threshold applies)."""
    return db.session.scalar(
        select(SiteCalibration)
        .where(SiteCalibration.model_version == model_version, SiteCalibration.withdrawn_at.is_(None))
        .order_by(SiteCalibration.id.desc())
        .limit(1)
    )
