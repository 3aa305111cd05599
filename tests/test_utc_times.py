"""Times are UTC on every page, whatever time zone the PostgreSQL server works in.

PostgreSQL answers timestamptz values in the session's TimeZone, which a hospital's cluster takes
from its host (initdb) or from ALTER DATABASE/ROLE, and a client from PGTZ. Run on PostgreSQL
(TEST_DATABASE_URL, scripts/with_postgres.sh); SQLite stores and answers the UTC we wrote.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from tests.factories import add_prediction
from webapp.admin.summary import verdicts_per_day
from webapp.extensions import db
from webapp.models import Prediction

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="PostgreSQL's session time zone; SQLite has none",
)

# 23:30 UTC on 4 December is 18:30 in New York, still the 4th, and 00:30 on the 5th in Tokyo.
SCREENED = datetime(2026, 12, 4, 23, 30, tzinfo=UTC)


@pytest.fixture
def zoned_session(app, monkeypatch):
    """New connections open in a zone far from UTC, as on a server whose postgresql.conf says so."""
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    yield
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_times_read_back_in_utc(app, zoned_session, clinician_user):
    with app.app_context():
        pid = add_prediction(clinician_user, when=SCREENED)
        db.session.remove()
        created = db.session.get(Prediction, pid).created_at
        assert created.utcoffset().total_seconds() == 0
        assert created == SCREENED


def test_result_page_and_history_show_utc(app, zoned_session, clinician_user, client, auth):
    with app.app_context():
        pid = add_prediction(clinician_user, when=SCREENED)
    auth.login("clin")
    assert "2026-12-04 23:30 UTC" in client.get(f"/predictions/{pid}").get_data(as_text=True)
    assert "2026-12-04 23:30" in client.get("/history/").get_data(as_text=True)


def test_summary_counts_the_utc_day(app, zoned_session, clinician_user):
    with app.app_context():
        add_prediction(clinician_user, when=datetime.now(UTC).replace(hour=23, minute=30))
        today = verdicts_per_day(1)[0]
        assert today["NORMAL"] == 1, today
