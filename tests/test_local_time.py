"""DISPLAY_TIMEZONE: the pages and the printable result show times in the site's zone, with its
abbreviation, and the pages' date filters (and the history's CSV export) mean that zone's days; the
JSON API keeps UTC days and UTC times with a Z (docs/api.md). Until 5 December every page was UTC:
a film read at 00:30 in Berlin showed the previous day, and "From 2026-12-05" missed that hour."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from tests.factories import add_prediction
from webapp import create_app
from webapp.config import TestingConfig
from webapp.env import ConfigError
from webapp.extensions import db
from webapp.local_time import day_bounds
from webapp.models import AuditEvent

berlin = pytest.mark.app_config(DISPLAY_TIMEZONE="Europe/Berlin")


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


@berlin
@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        # winter: UTC+1, and the film read at 00:30 belongs to the next day
        (datetime(2026, 1, 5, 23, 30, tzinfo=UTC), "2026-01-06 00:30 CET"),
        # summer: UTC+2
        (datetime(2026, 7, 5, 23, 30, tzinfo=UTC), "2026-07-06 01:30 CEST"),
    ],
)
def test_pages_show_the_display_zone_winter_and_summer(app, client, auth, admin_user, stored, shown):
    with app.app_context():
        pid = add_prediction(admin_user, when=stored)
    auth.login("admin")
    assert shown in page(client, f"/predictions/{pid}")
    assert shown in page(client, f"/predictions/{pid}/print")
    history = page(client, "/admin/history")
    assert shown in history and '<th scope="col">When (Europe/Berlin)</th>' in history
    assert "UTC" not in history
    # The API stays UTC with a Z.
    with app.app_context():
        api = client.get(f"/api/v1/predictions/{pid}", headers={"Authorization": f"Bearer {_token(app)}"})
    assert api.get_json()["created_at"] == stored.isoformat().replace("+00:00", "Z")


def _token(app) -> str:
    from webapp.access import issue_token
    from webapp.models import User

    admin = db.session.scalar(db.select(User).filter_by(username="admin"))
    secret = issue_token(admin, days=1, actor="admin")[1]
    db.session.commit()
    return secret


@berlin
def test_the_hour_that_occurs_twice_in_autumn_reads_as_two_times(app, client, auth, admin_user):
    # 25 October 2026, 03:00 CEST -> 02:00 CET: 00:30 and 01:30 UTC are both 02:30 on the wall clock.
    with app.app_context():
        add_prediction(admin_user, when=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), filename="first.jpeg")
        add_prediction(admin_user, when=datetime(2026, 10, 25, 1, 30, tzinfo=UTC), filename="second.jpeg")
    auth.login("admin")
    history = page(client, "/admin/history")
    assert "2026-10-25 02:30 CEST" in history and "2026-10-25 02:30 CET" in history


@pytest.mark.app_config(DISPLAY_TIMEZONE="Europe/Moscow")
def test_a_repeated_hour_under_one_abbreviation_also_gives_the_offset(app, client, auth, admin_user):
    # 26 October 2014: Moscow went from UTC+4 to UTC+3 for good, both "MSK"; the label alone would repeat.
    with app.app_context():
        add_prediction(admin_user, when=datetime(2014, 10, 25, 21, 30, tzinfo=UTC))
        add_prediction(admin_user, when=datetime(2014, 10, 25, 22, 30, tzinfo=UTC))
    auth.login("admin")
    history = page(client, "/admin/history")
    assert "2014-10-26 01:30 MSK UTC+04:00" in history and "2014-10-26 01:30 MSK UTC+03:00" in history


# Each day's edges in Berlin: the day the clocks go forward (23 hours) and back (25 hours).
DST_DAYS = [
    (
        "2026-03-29",
        {
            "before": datetime(2026, 3, 28, 22, 59, tzinfo=UTC),  # 23:59 CET on the 28th
            "first": datetime(2026, 3, 28, 23, 0, tzinfo=UTC),  # 00:00 CET
            "last": datetime(2026, 3, 29, 21, 59, tzinfo=UTC),  # 23:59 CEST
            "after": datetime(2026, 3, 29, 22, 0, tzinfo=UTC),  # 00:00 CEST on the 30th
        },
    ),
    (
        "2026-10-25",
        {
            "before": datetime(2026, 10, 24, 21, 59, tzinfo=UTC),  # 23:59 CEST on the 24th
            "first": datetime(2026, 10, 24, 22, 0, tzinfo=UTC),  # 00:00 CEST
            "last": datetime(2026, 10, 25, 22, 59, tzinfo=UTC),  # 23:59 CET
            "after": datetime(2026, 10, 25, 23, 0, tzinfo=UTC),  # 00:00 CET on the 26th
        },
    ),
]


@berlin
@pytest.mark.parametrize(("day", "moments"), DST_DAYS, ids=["spring", "autumn"])
def test_the_page_filters_mean_the_zones_day(app, client, auth, admin_user, day, moments):
    with app.app_context():
        for name, moment in moments.items():
            add_prediction(admin_user, when=moment, filename=f"{name}.jpeg")
            db.session.add(AuditEvent(actor="auditor", action="probe", target=f"probe {name}", created_at=moment))
        db.session.commit()
    auth.login("admin")
    query = f"date_from={day}&date_to={day}"
    history = page(client, f"/admin/history?{query}")
    assert {n for n in moments if f"{n}.jpeg" in history} == {"first", "last"}
    mine = page(client, f"/history/?{query}")
    assert {n for n in moments if f"{n}.jpeg" in mine} == {"first", "last"}
    # The export button carries the page's filters: it holds the rows the list shows.
    exported = list(csv.DictReader(io.StringIO(page(client, f"/admin/history.csv?{query}"))))
    assert sorted(row["filename"] for row in exported) == ["first.jpeg", "last.jpeg"]
    audit = page(client, f"/admin/audit?user=auditor&{query}")
    assert {n for n in moments if f"<td>probe {n}</td>" in audit} == {"first", "last"}
    # The API's days are UTC, as docs/api.md says.
    with app.app_context():
        headers = {"Authorization": f"Bearer {_token(app)}"}
    listed = client.get(f"/api/v1/predictions?{query}", headers=headers).get_json()["predictions"]
    utc_day = {n for n, m in moments.items() if m.date().isoformat() == day}
    assert {row["filename"].removesuffix(".jpeg") for row in listed} == utc_day
    events = client.get(f"/api/v1/audit-events?user=auditor&{query}", headers=headers).get_json()["events"]
    assert {e["detail"].removeprefix("probe ") for e in events} == utc_day


@pytest.mark.app_config(DISPLAY_TIMEZONE="America/New_York")
def test_the_farthest_days_west_of_utc_are_no_error(app, client, auth, admin_user):
    # 9999-12-31 ends in the year 10000 in UTC: past what a datetime holds.
    auth.login("admin")
    assert client.get("/admin/history?date_from=0001-01-01&date_to=9999-12-31").status_code == 200
    assert client.get("/admin/audit?date_from=0001-01-01&date_to=9999-12-31").status_code == 200
    assert day_bounds(date.max, date.max, ZoneInfo("America/New_York"))[1] is None
    assert day_bounds(date.min, None, ZoneInfo("Asia/Tokyo")) == (None, None)


@berlin
def test_the_summary_counts_the_zones_days(app, admin_user):
    from webapp.admin.summary import verdicts_per_day

    # 00:30 today in Berlin is 22:30 or 23:30 yesterday in UTC.
    zone = ZoneInfo("Europe/Berlin")
    today = datetime.now(zone).date()
    with app.app_context():
        add_prediction(admin_user, when=datetime.combine(today, time(0, 30), tzinfo=zone).astimezone(UTC))
        counts = verdicts_per_day(1)[0]
    assert counts["day"] == today.isoformat() and counts["NORMAL"] == 1, counts


@berlin
def test_the_summary_names_the_zone_its_days_are_counted_in(app, client, auth, admin_user):
    """Found following docs/deployment.md ("the tables' headings name the zone", "the summary counts its
    days"): the summary's table headed its column "Day" alone, so its counts, Berlin's days, read as the
    UTC days of the API and the CSV's created_at, which differ by the films of the first hour or two."""
    with app.app_context():
        add_prediction(admin_user, when=datetime.now(UTC))
    auth.login("admin")
    assert '<th scope="col">Day (Europe/Berlin)</th>' in page(client, "/admin/summary")


def test_utc_stays_the_default(app, client, auth, admin_user):
    with app.app_context():
        pid = add_prediction(admin_user, when=datetime(2026, 12, 4, 23, 30, tzinfo=UTC))
    auth.login("admin")
    assert "2026-12-04 23:30 UTC" in page(client, f"/predictions/{pid}")
    history = page(client, "/admin/history?date_from=2026-12-04&date_to=2026-12-04")
    assert "2026-12-04 23:30 UTC" in history and '<th scope="col">When (UTC)</th>' in history


@pytest.mark.parametrize("name", ["Berlin", "Europe", "CET+1", "../etc/passwd", "right/UTC"])
def test_a_zone_that_is_not_an_iana_name_stops_the_app(tmp_path, name):
    with pytest.raises(ConfigError, match=f"DISPLAY_TIMEZONE must be an IANA time zone name .*{re.escape(repr(name))}"):
        create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "DISPLAY_TIMEZONE": name})


@berlin
def test_the_worklist_shows_the_display_zone(app, client, auth, clinician_user):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with app.app_context():
        add_prediction(None, source="dicom", when=now)
    auth.login("clin")
    worklist = page(client, "/worklist")
    local = now.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{local:%Y-%m-%d %H:%M} {local.tzname()}" in worklist
    assert '<th scope="col">Received (Europe/Berlin)</th>' in worklist
