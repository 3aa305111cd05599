"""Rows say what they are, and repeated controls which row they act on. A screen reader announces a
focused control by its name: ten "Deactivate" buttons, "Token name" fields or "Adopt" buttons, one
per row, did not say whose account or which threshold (WCAG 2.4.6)."""

from __future__ import annotations

import html
import io
import re
from collections import Counter

from tests.archives import labelled_films, zip_bytes
from tests.factories import add_run_of_spread_scores
from tests.helpers import drain, make_user

LABEL = re.compile(r"<label for=\"([^\"]+)\"[^>]*>(.*?)</label>", re.S)
BUTTON = re.compile(r"<button([^>]*)>(.*?)</button>", re.S)
ARIA_LABEL = re.compile(r'aria-label="([^"]*)"')


def control_names(page: str) -> list[str]:
    """The accessible name of every button and labelled field in `page`'s main content."""
    main = page.split('<main id="main"', 1)[1]
    names = [re.sub(r"<[^>]+>", "", text).strip() for _, text in LABEL.findall(main)]
    for attributes, text in BUTTON.findall(main):
        named = ARIA_LABEL.search(attributes)
        names.append(named.group(1) if named else re.sub(r"<[^>]+>", "", text).strip())
    return [html.unescape(name) for name in names]


def repeated(names: list[str]) -> dict[str, int]:
    return {name: n for name, n in Counter(names).items() if n > 1}


def test_the_users_page_names_each_rows_controls(app, client, auth, admin_user, clinician_user):
    make_user(app, "other", "clinician")
    auth.login("admin")
    names = control_names(client.get("/admin/users").get_data(as_text=True))
    assert not repeated(names), repeated(names)
    assert "Deactivate clin" in names and "Issue API token for other" in names


def finished_run(client, token: str, app) -> int:
    """A small validation run (six films), screened by the job worker."""
    response = client.post(
        "/api/v1/validation-runs",
        headers={"Authorization": f"Bearer {token}"},
        data={"archive": (io.BytesIO(zip_bytes(labelled_films(copies=3))), "site.zip")},
    )
    assert response.status_code == 202
    drain(app)
    return response.get_json()["id"]


def test_each_operating_point_is_adopted_by_name(app, client, auth, admin_user):
    with app.app_context():
        run_id = add_run_of_spread_scores(admin_user)  # Adopt is offered only where it can be done
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    names = control_names(page)
    assert any(name.startswith("Adopt ") for name in names), names
    assert not repeated(names), repeated(names)


def test_the_reports_figures_are_row_headers(app, client, auth, admin_user, admin_token):
    """The report's summary and operating-point tables named each row in a plain cell: a screen
    reader moving along a row of figures said "91.2%" without "Sensitivity at 0.390" (WCAG 1.3.1)."""
    run_id = finished_run(client, admin_token, app)
    auth.login("admin")
    page = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    for table in ("summary", "operating-points"):
        body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
        rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
        assert rows and all(row.lstrip().startswith('<th scope="row">') for row in rows), (table, rows[0][:80])
