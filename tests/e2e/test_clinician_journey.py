"""A clinician screens radiographs: file chooser, drag and drop, previews, verdicts, bars, heat map,
notes, a corrected verdict; a corrupt file; and the admin pages that stay closed to them."""

from __future__ import annotations

import base64
import re

from playwright.sync_api import Page, expect

from tests.e2e.paths import IMAGES
from tests.e2e.result_checks import check_heatmap_toggle, check_verdict

# What the shipped model must say about the fixture films (the photo is not a radiograph at all).
EXPECTED = {"normal.jpeg": "NORMAL", "pneumonia.jpeg": "PNEUMONIA", "photo.jpg": "UNKNOWN"}
# The results page lists the most urgent first: pneumonia, then UNKNOWN, then normal.
READING_ORDER = ["pneumonia.jpeg", "photo.jpg", "normal.jpeg"]

_DROP_JS = """
([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const zone = document.getElementById('dropzone');
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}
"""


def drop_file(page: Page, name: str, data: bytes, mime: str) -> None:
    """What a drag from the desktop delivers: a drop event carrying a DataTransfer with the file."""
    page.evaluate(_DROP_JS, [name, mime, base64.b64encode(data).decode()])


def card_for(page: Page, filename: str):
    return page.locator("article.result").filter(has=page.locator("h2 .filename", has_text=filename))


def choose_files(page: Page, *names: str) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Choose files", exact=True).click()
    chooser.value.set_files([IMAGES / n for n in names])


def test_clinician_screens_and_corrects(visit):
    page = visit.page
    visit.sign_in("e2e-clin")
    expect(page.locator("#progress")).to_be_hidden()  # no upload yet, so no progress bar
    visit.step("clinician-01-upload-page")

    choose_files(page, "normal.jpeg", "pneumonia.jpeg")
    drop_file(page, "photo.jpg", (IMAGES / "photo.jpg").read_bytes(), "image/jpeg")
    previews = page.locator("#previews li")
    expect(previews).to_have_count(3)
    for i, name in enumerate(EXPECTED):
        expect(previews.nth(i)).to_contain_text(name)
        preview = previews.nth(i).get_by_role("img", name=f"Preview of {name}")
        expect(preview).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    expect(page.locator("#upload-errors .error")).to_have_count(0)
    visit.step("clinician-02-previews")

    page.get_by_role("button", name="Screen").click()
    page.wait_for_url(re.compile(r"/screen/results\?id=\d+&id=\d+&id=\d+$"))
    expect(page.get_by_role("heading", name="Results", level=1)).to_be_visible()
    cards = page.locator("article.result")
    expect(cards).to_have_count(3)
    expect(cards.locator("h2 .filename")).to_have_text(READING_ORDER)
    for name, label in EXPECTED.items():
        card = card_for(page, name)
        check_verdict(card, label)
        check_heatmap_toggle(card)
    visit.step("clinician-03-results")
    card_for(page, "pneumonia.jpeg").screenshot(path=visit.step_path("result-pneumonia"))
    card_for(page, "photo.jpg").screenshot(path=visit.step_path("result-unknown"))

    # The radiologist reads the normal film differently and says so.
    normal = card_for(page, "normal.jpeg")
    normal.get_by_label("Radiologist's reading").select_option("PNEUMONIA")
    normal.get_by_label("Comment (optional)").fill("Subtle retrocardiac opacity")
    normal.get_by_role("button", name="Confirm / correct").click()
    page.wait_for_url(re.compile(r"/screen/results\?id="))
    expect(page.locator(".flash.info")).to_contain_text("Review saved")
    normal = card_for(page, "normal.jpeg")
    expect(normal).to_contain_text("Reviewed by e2e-clin: Pneumonia (Subtle retrocardiac opacity)")
    expect(normal.get_by_label("Radiologist's reading")).to_have_value("PNEUMONIA")
    expect(normal.get_by_role("button", name="Update review")).to_be_visible()
    visit.step("clinician-04-review-saved")

    page.get_by_role("link", name="My predictions").click()
    # Newest first: this upload's three films head the list, the corrected one with its review.
    newest = page.locator("table.history tbody tr").filter(has=page.locator("td.filename"))
    expect(newest.locator("td.filename").nth(0)).to_have_text("photo.jpg")
    expect(newest.locator("td.filename").nth(1)).to_have_text("pneumonia.jpeg")
    expect(newest.locator("td.filename").nth(2)).to_have_text("normal.jpeg")
    expect(newest.nth(2).locator("td").last).to_have_text("Pneumonia")
    visit.step("clinician-05-my-predictions")


def test_corrupt_file_is_refused_and_page_stays_usable(visit, tmp_path):
    page = visit.page
    # The server refuses the file with a 4xx, which Chromium logs; that one is expected.
    visit.console.allow(r"Failed to load resource: the server responded with a status of 4\d\d")
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes((IMAGES / "normal.jpeg").read_bytes()[:300])
    visit.sign_in("e2e-clin")
    page.get_by_label("Choose files").set_input_files(broken)
    expect(page.locator("#previews li")).to_have_count(1)
    expect(page.locator("#previews li")).to_contain_text("Cannot preview")  # not a broken-image icon
    page.get_by_role("button", name="Screen").click()
    error = page.locator("#upload-errors .error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("broken.jpeg: ")
    assert len(error.inner_text()) > len("broken.jpeg: ") + 15, "the error does not say what is wrong"
    assert re.search(r"/screen$", page.url), "a refused file must keep the user on the upload page"
    expect(page.get_by_role("button", name="Screen")).to_be_enabled()
    expect(page.locator("#progress")).to_be_hidden()
    visit.step("corrupt-01-error")

    # Still usable: take the broken file off the list, screen a good one.
    page.get_by_role("button", name="Remove broken.jpeg").click()
    expect(page.locator("#previews li")).to_have_count(0)
    page.get_by_label("Choose files").set_input_files(IMAGES / "normal.jpeg")
    expect(page.locator("#previews li")).to_have_count(1)
    page.get_by_role("button", name="Screen").click()
    page.wait_for_url(re.compile(r"/screen/results\?id=\d+$"))
    expect(page.locator("article.result")).to_have_count(1)
    visit.step("corrupt-02-recovered")


def test_clinician_cannot_open_admin_pages(visit):
    page = visit.page
    visit.console.allow(r"Failed to load resource: the server responded with a status of 403")
    visit.sign_in("e2e-clin")
    expect(page.get_by_role("link", name="History")).to_have_count(0)
    for path in ("/admin/history", "/admin/summary", "/admin/users", "/admin/history.csv"):
        response = page.goto(path)
        assert response.status == 403, f"{path}: HTTP {response.status}"
        expect(page.get_by_role("heading", level=1)).to_have_text("403")
        expect(page.locator(".error-message")).to_have_text("You do not have access to this page.")
    visit.step("clinician-06-forbidden")
    page.get_by_role("link", name="Back to screening").click()
    page.wait_for_url(re.compile(r"/screen$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Screen chest radiographs")


def test_saving_a_review_returns_to_that_film(visit):
    """In a batch the results page came back at its top after a review was saved, so the reader had
    to find their place again (the fifth card sat 5,000 px down). It returns to the reviewed film."""
    page = visit.page
    visit.sign_in("e2e-clin")
    choose_files(page, "normal.jpeg", "pneumonia.jpeg", "normal_2.jpeg", "pneumonia_2.jpeg")
    page.get_by_role("button", name="Screen").click()
    page.wait_for_url(re.compile(r"/screen/results\?"))
    last = page.locator("article.result").last
    last.get_by_label("Comment (optional)").fill("agree")
    last.get_by_role("button", name="Confirm / correct").click()
    expect(page.locator(".flash.info")).to_contain_text("Review saved")
    reviewed = page.locator("article.result").last
    expect(reviewed.get_by_role("heading", level=2)).to_be_in_viewport()
    expect(reviewed.locator(".feedback")).to_contain_text("Reviewed by e2e-clin")
