import csv
import io
from datetime import UTC, datetime, time, timedelta

import pytest

from tests.factories import add_prediction
from webapp.extensions import db
from webapp.models import AuditEvent

# Recent days, so the 30-day summary includes them whenever the suite runs.
_TODAY = datetime.now(UTC).date()
DAY1 = datetime.combine(_TODAY - timedelta(days=3), time(9), tzinfo=UTC)
DAY2 = datetime.combine(_TODAY - timedelta(days=2), time(9), tzinfo=UTC)
D1, D2 = DAY1.date().isoformat(), DAY2.date().isoformat()


@pytest.fixture
def rows(app, admin_user, clinician_user, other_clinician):
    with app.app_context():
        return {
            "n1": add_prediction(clinician_user, "NORMAL", DAY1, "v1", "n1.jpeg", feedback="NORMAL"),
            "p1": add_prediction(clinician_user, "PNEUMONIA", DAY2, "v2", "p1.jpeg", feedback="NORMAL"),
            "u1": add_prediction(other_clinician, "UNKNOWN", DAY2, "v2", "=cmd().jpeg"),
        }


def listed(client, path):
    html = client.get(path).get_data(as_text=True)
    return {name for name in ("n1.jpeg", "p1.jpeg", "=cmd().jpeg") if name in html}


@pytest.mark.parametrize(
    "query,expected",
    [
        ("", {"n1.jpeg", "p1.jpeg", "=cmd().jpeg"}),
        ("?verdict=PNEUMONIA", {"p1.jpeg"}),
        (f"?date_from={D2}", {"p1.jpeg", "=cmd().jpeg"}),
        (f"?date_to={D1}", {"n1.jpeg"}),
        ("?user=other", {"=cmd().jpeg"}),
        ("?user=+other+", {"=cmd().jpeg"}),
        # A User box holding only spaces listed nothing ("No predictions match"): no name, no filter.
        ("?user=+++", {"n1.jpeg", "p1.jpeg", "=cmd().jpeg"}),
        ("?model_version=v1", {"n1.jpeg"}),
        ("?reviewed=yes", {"n1.jpeg", "p1.jpeg"}),
        ("?reviewed=no", {"=cmd().jpeg"}),
        (f"?verdict=NORMAL&date_from={D2}", set()),
    ],
)
def test_admin_history_filters(client, auth, rows, query, expected):
    auth.login("admin")
    assert listed(client, "/admin/history" + query) == expected


def test_invalid_filter_shows_error(client, auth, rows):
    auth.login("admin")
    response = client.get("/admin/history?date_from=yesterday")
    assert response.status_code == 400 and "Not a valid date" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/history/", "/admin/history", "/admin/audit"])
def test_dates_the_wrong_way_round_are_explained(client, auth, rows, path):
    """From after To matched nothing and the page said only that no predictions match, as if none
    had been made (reproduced with the history form's own date fields)."""
    auth.login("admin")
    response = client.get(f"{path}?date_from={D2}&date_to={D1}")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f"&#39;From&#39; ({D2}) is after &#39;To&#39; ({D1}), so no day can match: swap the two dates." in html
    assert client.get(f"{path}?date_from={D1}&date_to={D1}").status_code == 200  # one day is a range


@pytest.mark.parametrize("path", ["/history/", "/admin/history", "/admin/audit"])
def test_a_refused_filter_says_the_list_is_unfiltered(client, auth, rows, path):
    """With From after To the page listed every row under the form still showing the filters entered
    (a verdict chosen, say): the list looked filtered. It now says the filters were not applied."""
    auth.login("admin")
    refused = client.get(f"{path}?verdict=PNEUMONIA&date_from={D2}&date_to={D1}").get_data(as_text=True)
    assert 'id="filters-refused"' in refused and "These filters were not applied" in refused
    assert 'id="filters-refused"' not in client.get(f"{path}?date_from={D1}&date_to={D2}").get_data(as_text=True)


def test_clinician_sees_only_own(client, auth, rows):
    auth.login("clin")
    assert listed(client, "/history/") == {"n1.jpeg", "p1.jpeg"}


def test_pagination(app, client, auth, admin_user):
    with app.app_context():
        for i in range(30):
            add_prediction(admin_user, filename=f"f{i}.jpeg")
    auth.login("admin")
    first = client.get("/admin/history?verdict=NORMAL").get_data(as_text=True)
    assert "Page 1 of 2" in first and "page=2" in first and "verdict=NORMAL" in first
    second = client.get("/admin/history?verdict=NORMAL&page=2").get_data(as_text=True)
    assert "f0.jpeg" in second and "f29.jpeg" not in second


def test_detail_view_for_admin(client, auth, rows):
    auth.login("admin")
    html = client.get(f"/predictions/{rows['u1']}").get_data(as_text=True)
    assert "by other" in html and "not a chest radiograph" in html and "heatmap-layer.png" in html


def test_csv_export_with_filters_is_audited(app, client, auth, rows):
    auth.login("admin")
    response = client.get("/admin/history.csv?model_version=v2")
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert sorted(r["label"] for r in table) == ["PNEUMONIA", "UNKNOWN"]
    unknown = next(r for r in table if r["label"] == "UNKNOWN")
    assert unknown["filename"] == "'=cmd().jpeg"  # formula injection defused
    assert next(r for r in table if r["label"] == "PNEUMONIA")["feedback_label"] == "NORMAL"
    with app.app_context():
        event = db.session.query(AuditEvent).filter_by(action="export").one()
        assert event.actor == "admin" and "model_version=v2" in event.details
    assert "CSV, 2 rows" in client.get("/admin/audit").get_data(as_text=True)


def test_the_csv_exports_trail_names_only_the_filters_it_applied(app, client, auth, rows):
    # Parameters the form does not read were written into the trail as filters: an export of every row
    # read "filters: User=other, ..." (a misspelt filter, ignored) and took any text, newlines too.
    auth.login("admin")
    response = client.get("/admin/history.csv?User=other&page=7&note=%0Afiltered+by+request&verdict=PNEUMONIA")
    assert len(list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))) == 1
    with app.app_context():
        event = db.session.query(AuditEvent).filter_by(action="export").one()
        assert (event.target, event.details) == ("CSV, 1 rows", "filters: verdict=PNEUMONIA")
    client.get("/admin/history.csv?User=other")
    with app.app_context():
        assert db.session.query(AuditEvent.details).filter_by(action="export").all()[-1] == ("filters: none",)
    client.get("/admin/history.csv?user=+++")  # spaces are no filter, in the trail either
    with app.app_context():
        assert db.session.query(AuditEvent.details).filter_by(action="export").all()[-1] == ("filters: none",)


def test_each_page_of_the_admin_history_is_in_the_audit_trail(app, client, auth, rows):
    # Every user's patients, 25 a page, read without a trace, when each page of the same list through
    # the API (GET /api/v1/predictions) is an audit row. A clinician's own list stays out of the trail.
    auth.login("clin")
    client.get("/history/")
    auth.logout()
    auth.login("admin")
    client.get("/admin/history?verdict=PNEUMONIA&User=x")
    client.get("/admin/history?date_from=yesterday")  # refused filters: the unfiltered rows it shows
    with app.app_context():
        viewed = db.session.query(AuditEvent).filter_by(action="history_viewed").order_by(AuditEvent.id).all()
        assert [(e.actor, e.target, e.details) for e in viewed] == [
            ("admin", "1 rows", "filters: verdict=PNEUMONIA; page=1"),
            ("admin", "3 rows", "filters: none; page=1"),
        ]


def test_csv_times_are_utc_and_say_so(app, client, auth, admin_user, clinician_user):
    """The export's created_at was a bare '2026-12-04T23:30:00' on SQLite (a spreadsheet reads it as
    local time) and carried the PostgreSQL session's offset there: now the API's form, with a Z."""
    with app.app_context():
        add_prediction(clinician_user, when=datetime(2026, 12, 4, 23, 30, 5, 250000, tzinfo=UTC))
    auth.login("admin")
    [row] = csv.DictReader(io.StringIO(client.get("/admin/history.csv").get_data(as_text=True)))
    assert row["created_at"] == "2026-12-04T23:30:05.250000Z"


def test_summary_charts(app, client, auth, rows):
    auth.login("admin")
    html = client.get("/admin/summary").get_data(as_text=True)
    assert 'id="chart-per-day"' in html and 'id="chart-agreement"' in html
    assert f"<td>{D1}</td><td>1</td><td>0</td><td>0</td>" in html
    assert f"<td>{D2}</td><td>0</td><td>1</td><td>1</td>" in html
    # v1: one review, agreed; v2: one review (NORMAL vs PNEUMONIA), disagreed.
    assert "<td>v1</td><td>1</td><td>0</td><td>1</td><td>100.0%</td>" in html
    assert "<td>v2</td><td>1</td><td>0</td><td>0</td><td>0.0%</td>" in html


def test_a_page_past_the_last_shows_the_last_page(client, auth, rows):
    """An old link or bookmark (?page=5 after the list shrank or a filter narrowed it) showed an empty
    table saying "No predictions match these filters" above "3 predictions", with no link back;
    the audit trail said "Page 400 of 1". Past the end, the last page is shown."""
    auth.login("admin")
    html = client.get("/admin/history?page=5").get_data(as_text=True)
    assert {"n1.jpeg", "p1.jpeg", "=cmd().jpeg"} <= set(listed(client, "/admin/history?page=5"))
    assert "No predictions match" not in html
    audit = client.get("/admin/audit?page=400").get_data(as_text=True)
    assert "No audit events match" not in audit and "Page 1 of 1" in audit


@pytest.fixture
def statements(app):
    """The SQL the app sends while the test runs."""
    from sqlalchemy import event

    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


LISTS = [
    "/history/?page=2",
    "/admin/history?verdict=NORMAL",
    "/admin/history.csv",
    "/api/v1/predictions?per_page=2",
    "/admin/validation/monitoring",
]


def test_no_list_or_export_reads_the_images(client, auth, rows, admin_token, statements):
    # Found by the site review: with real review copies (0.3-0.5 MB each) and 10,000 predictions
    # the CSV export loaded every copy into the worker (4.7 GB of memory for a 2 MB file).
    auth.login("admin")
    for path in LISTS:
        response = client.get(path, headers={"Authorization": f"Bearer {admin_token}"} if "/api/" in path else {})
        assert response.status_code == 200, path
    reads = [s for s in statements if "FROM predictions" in s]
    assert reads and not [s for s in statements if "prediction_images" in s or "review_png" in s]
    assert client.get(f"/predictions/{rows['n1']}/image.png").status_code == 200  # a film's own page still has it


def test_history_pages_sort_ids_not_rows(client, auth, rows, admin_token, statements):
    # Found by the site review: on SQLite a deep page of a filtered history sorted whole rows, and the
    # columns stored behind each review copy made that read every copy (22 s for a clinician's last page).
    auth.login("admin")
    for path in LISTS[:2] + LISTS[3:]:
        client.get(path, headers={"Authorization": f"Bearer {admin_token}"} if "/api/" in path else {})
    paged = [s for s in statements if "FROM predictions" in s and "LIMIT" in s and "ORDER BY" in s]
    assert paged and all(s.split("FROM predictions")[0].split() == ["SELECT", "predictions.id"] for s in paged)


def test_the_csv_export_reads_the_readings_in_one_query(app, client, auth, admin_user, clinician_user, statements):
    # Found by the site review: exporting 10,000 predictions sent 10,010 queries, one per row's reading.
    with app.app_context():
        for i in range(30):
            add_prediction(clinician_user, "NORMAL", DAY1, "v1", f"f{i}.jpeg", feedback="NORMAL")
    auth.login("admin")
    statements.clear()
    response = client.get("/admin/history.csv")
    assert response.status_code == 200 and len(response.get_data(as_text=True).splitlines()) == 31
    assert len([s for s in statements if "FROM feedback" in s]) == 1
