"""Times on the pages in the site's zone (DISPLAY_TIMEZONE), and the pages' filter days in it.

The one home for both: every page and the printable result show a stored (UTC) time through the
`local_time` template filter, and the history and audit filters turn a day into UTC bounds through
`day_bounds`. The JSON API, the CSV and audit exports keep UTC with a Z (docs/api.md); the shell
commands print UTC through `utc_time`, saying so (a bare "2026-12-05 05:47" read as local time).

Each time carries its zone's abbreviation (CET, CEST; "+04" where the zone has none), so the hour
that occurs twice when the clocks go back reads as two different times.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

from flask import Flask, current_app

from .env import zone_named
from .models import as_utc

FORMATS = {"minutes": "%Y-%m-%d %H:%M", "seconds": "%Y-%m-%d %H:%M:%S", "day": "%Y-%m-%d"}


def display_zone() -> tzinfo:
    return current_app.extensions["display_zone"]


def local_time(moment: datetime | None, precision: str = "minutes") -> str:
    """ "2026-12-05 05:47 CET": a stored time in the display zone, with the zone's abbreviation."""
    if moment is None:
        return ""
    local = as_utc(moment).astimezone(display_zone())
    label = local.tzname()
    other_fold = local.replace(fold=1 - local.fold)
    if other_fold.utcoffset() != local.utcoffset() and other_fold.tzname() == label:
        # The hour repeated at a DST change, in a zone whose abbreviation does not tell its two halves apart.
        offset = local.strftime("%z")
        label = f"{label} UTC{offset[:3]}:{offset[3:]}"
    return f"{local.strftime(FORMATS[precision])} {label}"


def utc_time(moment: datetime, precision: str = "minutes") -> str:
    """ "2026-12-05 05:47 UTC": a stored time as the shell commands print it."""
    return f"{as_utc(moment).astimezone(UTC).strftime(FORMATS[precision])} UTC"


def day_bounds(date_from: date | None, date_to: date | None, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
    """`date_from` to `date_to` (both inclusive) as days in `zone`, as UTC instants: the first moment of
    the first day and the first moment after the last (exclusive). A day is 23 or 25 hours when the
    clocks change; a bound past what a datetime holds (the year 1 or 9999 shifted across the date
    line) is None, as no stored time lies beyond it."""
    return _first_moment(date_from, zone), _first_moment(date_to, zone, days_after=1)


def _first_moment(day: date | None, zone: tzinfo, days_after: int = 0) -> datetime | None:
    if day is None:
        return None
    try:
        # Midnight with fold=0: the earlier of a repeated midnight, and where the clocks skip midnight
        # the instant they jump to (zoneinfo reads a skipped time with the offset before the change).
        return datetime.combine(day + timedelta(days=days_after), time.min, tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def init_app(app: Flask) -> None:
    """Resolve the setting once (an override that names no zone stops the app as a bad environment
    value does) and give the templates the filter and the zone's name for table headings."""
    zone = zone_named("DISPLAY_TIMEZONE", app.config["DISPLAY_TIMEZONE"])
    app.extensions["display_zone"] = zone
    app.add_template_filter(local_time)
    app.add_template_global(app.config["DISPLAY_TIMEZONE"], "display_zone_name")
