"""An admin reviews the history: filters by verdict and date, opens a prediction, reviews it,
exports the filtered log as CSV (the download is read back) and looks at the summary charts."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.result_checks import check_bars, check_heatmap_toggle, image_loaded
from webapp.admin.export import COLUMNS


def apply_filters(page: Page, **values: str) -> None:
    form = page.locator("form.filters")
    for label, value in values.items():
        field = form.get_by_label(label, exact=True)
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    form.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()


def listed_ids(page: Page) -> list[int]:
    return [int(t) for t in page.locator("table.history tbody td:first-child a").all_inner_texts()]


def test_admin_reviews_history(visit, seeded_predictions):
    page = visit.page
    photo = seeded_predictions["photo.jpg"]
    assert photo["label"] == "UNKNOWN"
    today = datetime.now(UTC).date()
    visit.sign_in("e2e-admin")
    page.get_by_role("link", name="History", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Prediction history")
    assert {p["id"] for p in seeded_predictions.values()} <= set(listed_ids(page))
    visit.step("admin-01-history")

    apply_filters(page, Verdict="UNKNOWN", From=today.isoformat(), To=today.isoformat())
    assert "verdict=UNKNOWN" in page.url and f"date_from={today}" in page.url
    unknown_ids = listed_ids(page)
    assert photo["id"] in unknown_ids
    expect(page.locator("table.history tbody .badge")).to_have_text(["UNKNOWN"] * len(unknown_ids))
    expect(page.locator("form.filters").get_by_label("Verdict", exact=True)).to_have_value("UNKNOWN")
    visit.step("admin-02-filtered")

    # A day with nothing on it lists nothing.
    yesterday = (today - timedelta(days=1)).isoformat()
    apply_filters(page, From=yesterday, To=yesterday)
    expect(page.locator("table.history tbody")).to_contain_text("No predictions match these filters.")
    apply_filters(page, From=today.isoformat(), To=today.isoformat())
    assert listed_ids(page) == unknown_ids

    # The detail view: image, heat map, probabilities; the admin confirms it is no chest film.
    page.locator("table.history tbody").get_by_role("link", name=str(photo["id"]), exact=True).click()
    page.wait_for_url(re.compile(rf"/predictions/{photo['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Prediction {photo['id']} by e2e-clin")
    card = page.locator("article.result")
    expect(card.locator(".verdict-label")).to_have_text("UNKNOWN")
    expect(card.locator(".unknown-reason")).to_contain_text(photo["unknown_reason"])
    shown = check_bars(card)
    assert shown["PNEUMONIA"] == pytest.approx(photo["probabilities"]["PNEUMONIA"], abs=0.0006)
    check_heatmap_toggle(card)
    assert image_loaded(card.locator("img.radiograph"))
    visit.step("admin-03-detail")
    card.get_by_label("Radiologist's reading").select_option("NOT_CXR")
    card.get_by_label("Comment (optional)").fill("Holiday photo uploaded by mistake")
    card.get_by_role("button", name="Confirm / correct").click()
    expect(page.locator(".flash.info")).to_contain_text("Review saved")
    expect(page.locator("article.result")).to_contain_text("Reviewed by e2e-admin: Not a chest radiograph")

    # Back to the filtered list, then export exactly what it shows.
    page.goto(f"/admin/history?verdict=UNKNOWN&date_from={today}&date_to={today}")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"predictions-\d{8}-\d{6}\.csv", download.suggested_filename)
    with open(download.path(), newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == COLUMNS
    records = [dict(zip(COLUMNS, row)) for row in rows[1:]]
    assert sorted(int(r["id"]) for r in records) == sorted(unknown_ids)
    assert {r["label"] for r in records} == {"UNKNOWN"}
    assert all(r["created_at"].startswith(today.isoformat()) for r in records)
    exported = next(r for r in records if int(r["id"]) == photo["id"])
    assert exported["filename"] == "photo.jpg" and exported["user"] == "e2e-clin"
    assert exported["feedback_label"] == "NOT_CXR" and exported["feedback_by"] == "e2e-admin"
    # An UNKNOWN answer claims no probability: its score is only in the raw column.
    assert exported["p_pneumonia"] == exported["p_normal"] == ""
    assert float(exported["raw_p_pneumonia"]) == pytest.approx(photo["probabilities"]["PNEUMONIA"], abs=0.00006)

    # The export is an audited admin action.
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("main td").filter(has_text=re.compile(r"^export$")).first).to_be_visible()
    visit.step("admin-04-audit")

    page.get_by_role("link", name="Summary").click()
    per_day = page.locator("svg#chart-per-day")
    expect(per_day).to_be_visible()
    bar_heights = per_day.locator("rect").evaluate_all("rects => rects.map(r => r.getBoundingClientRect().height)")
    assert sum(bar_heights) > 0, "the per-day chart draws no bars"
    counts = page.locator("table.history").first.locator("tbody tr").filter(has_text=today.isoformat())
    assert sum(int(n) for n in counts.locator("td").all_inner_texts()[1:]) >= len(seeded_predictions)
    agreement = page.locator("svg#chart-agreement")
    expect(agreement).to_be_visible()
    expect(agreement).to_contain_text(photo["model_version"])
    visit.step("admin-05-summary")

    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("table", name="User accounts")).to_contain_text("e2e-clin")
    visit.step("admin-06-users")
