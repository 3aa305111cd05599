"""The validation report's charts, read as a screen reader reads them: each is one image, so each must
say where its numbers are as text. The report is rendered in process (the browser journeys' server runs
no job worker) and opened in Chromium."""

from __future__ import annotations

import io
import re

from playwright.sync_api import expect

from tests.archives import labelled_films, zip_bytes
from tests.e2e.paths import STYLESHEET
from tests.factories import add_run_of_spread_scores
from tests.helpers import csrf_token, drain
from webapp.extensions import db
from webapp.models import ValidationRun


def test_each_chart_points_to_its_numbers_as_text(app, client, auth, admin_user, browser):
    """The ROC curve's only text was the AUC and the operating-points table: its curve, drawn from up
    to 300 points, had no text equivalent, and neither chart said where its text was (an image named
    "ROC curve" and nothing more). Each chart is now described by the summary of a table of the very
    numbers it draws, as the reliability diagram's bins already were."""
    auth.login("admin")
    token = csrf_token(client, "/admin/validation/")
    response = client.post(
        "/admin/validation/",
        data={"csrf_token": token, "archive": (io.BytesIO(zip_bytes(labelled_films(copies=3))), "site.zip")},
    )
    assert response.status_code == 303
    drain(app)
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        run = db.session.scalars(db.select(ValidationRun)).one()
        drawn = run.metrics["roc"]

    page = browser.new_page()
    try:
        page.set_content(html)
        roc = page.get_by_role("img", name="ROC curve")
        expect(roc).to_have_accessible_description(re.compile(r"^The curve's points as a table"))
        reliability = page.get_by_role("img", name=re.compile(r"^Reliability diagram"))
        expect(reliability).to_have_accessible_description("The diagram's bins as a table")

        page.get_by_text("The curve's points as a table").click()
        table = page.get_by_role("table", name=re.compile(r"^ROC curve points"))
        expect(table).to_be_visible()
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(len(drawn))
        first, last = rows.first.locator("td"), rows.last.locator("td")
        expect(first).to_have_text([f"{drawn[0][0]:.3f}", f"{drawn[0][1]:.3f}"])
        expect(last).to_have_text([f"{drawn[-1][0]:.3f}", f"{drawn[-1][1]:.3f}"])
    finally:
        page.close()


def test_the_reason_for_adopting_a_threshold_has_a_visible_label(app, client, auth, admin_user, browser):
    """Each proposal's reason box on the report had a label for screen readers only and a placeholder,
    "Reason for adopting", gone at the first key typed: a sighted admin halfway through a reason saw
    an unlabelled box beside Adopt (WCAG 3.3.2). The label now shows above the box; its accessible
    name still says which proposal (WCAG 2.5.3: it starts with the words shown)."""
    auth.login("admin")
    with app.app_context():
        run_id = add_run_of_spread_scores(admin_user)  # proposals a site may adopt
    html = client.get(f"/admin/validation/{run_id}").get_data(as_text=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.set_content(html)
        page.add_style_tag(path=str(STYLESHEET))
        boxes = page.locator("#operating-points input[name=reason]")
        assert boxes.count() >= 2
        for box in boxes.all():
            label = page.locator(f"label[for='{box.get_attribute('id')}']")
            shown, own = label.bounding_box(), box.bounding_box()
            assert shown and shown["x"] >= 0 and shown["width"] > 20, shown  # on the page, not off-screen
            assert shown["y"] + shown["height"] <= own["y"] + 1 and abs(shown["x"] - own["x"]) < 2, (shown, own)
            assert box.get_attribute("placeholder") is None  # no second, vanishing label
            expect(box).to_have_accessible_name(re.compile(r"^Reason for adopting \S"))
            expect(label).to_contain_text("Reason for adopting")
    finally:
        page.close()
