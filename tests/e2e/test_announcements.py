"""What a screen reader must be told without looking for it: the one-time API token secret, and the
upload's progress (a live region is only read out if it was in the page, empty, before its text)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.paths import IMAGES


def test_a_new_api_token_takes_the_focus(visit):
    """After "Issue API token" the page came back with the focus at the top of the document: a screen
    reader started on the skip link and the menu, and the secret, shown only this once, sat in a
    role="status" box that a freshly loaded page does not announce. The box now takes the focus."""
    page = visit.page
    visit.sign_in("e2e-admin")
    page.goto("/admin/users")
    page.get_by_label("Token name for e2e-clin").fill("a11y focus")
    page.get_by_role("button", name="Issue API token for e2e-clin").click()
    section = page.get_by_role("region", name=re.compile(r"^New API token \d+ for e2e-clin$"))
    expect(section).to_be_focused()
    expect(section.locator("code.token")).not_to_be_empty()
    visit.step("admin-new-token")


def test_an_actions_confirmation_takes_the_focus(visit):
    """After an action on an admin page (here revoking a token) the page came back with its
    confirmation in a role="status" box and the focus at the top of the document: a status box that
    is in the page when it loads is not announced, so a screen reader said nothing of what was done.
    The confirmation now takes the focus, as a refusal does; on the sign-in page the username keeps it."""
    page = visit.page
    visit.sign_in("e2e-admin")
    page.goto("/admin/users")
    page.get_by_label("Token name for e2e-clin").fill("to revoke")
    page.get_by_role("button", name="Issue API token for e2e-clin").click()
    heading = page.get_by_role("heading", name=re.compile(r"^New API token \d+ for e2e-clin$"))
    token_id = re.search(r"\d+", heading.inner_text()).group(0)
    page.get_by_role("button", name=f"Revoke token {token_id} of e2e-clin").click()
    confirmation = page.get_by_role("status").filter(has_text=f"Token {token_id} of e2e-clin revoked.")
    expect(confirmation).to_be_focused()
    page.keyboard.press("Tab")  # on into the page's content, not back to the menu
    assert page.evaluate("document.activeElement.closest('main') !== null")
    visit.step("admin-action-confirmed")
    visit.sign_out()
    expect(page.get_by_role("status").filter(has_text="signed out")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_focused()


def test_the_upload_progress_region_exists_before_its_first_update(visit):
    """The progress text's live region sat inside the hidden progress box, and the script showed the
    box and wrote "0%" into it in the same moment: a region that appears with its text already in it
    is not announced, so a screen reader missed the first update (and, on a fast link, the only one
    before "Analysing…"). The live region is now in the page from the start, empty."""
    page = visit.page
    visit.sign_in("e2e-clin")
    status = page.locator("#progress-text")
    expect(status).to_have_attribute("aria-live", "polite")
    expect(status).to_be_empty()
    assert page.evaluate("(e) => e.closest('[hidden]') === null", status.element_handle()), (
        "the live region is inside a hidden box when the page loads"
    )
    page.get_by_label("Choose files").set_input_files([IMAGES / "normal.jpeg"])
    # Hold the upload's answer so the progress can be read while it runs.
    page.route("**/screen", lambda route: None if route.request.method == "POST" else route.continue_())
    page.get_by_role("button", name="Screen").click()
    expect(page.locator("#progress")).to_be_visible()
    expect(status).to_have_text(re.compile(r"^(\d+%|Analysing…)$"))


def test_the_printable_result_reads_in_order_and_says_the_verdict_once(visit, seeded_predictions):
    """Emulating print: the printable result read "Verdict: PNEUMONIA PNEUMONIA" (the word, then the
    coloured badge that repeats it for the paper). Checked with it: the reading order is film, heat
    map (or, on UNKNOWN, why none is printed), verdict, reason, scores, facts, notes."""
    page = visit.page
    visit.sign_in("e2e-clin")
    page.emulate_media(media="print")
    for name, verdict in (("pneumonia.jpeg", "PNEUMONIA"), ("photo.jpg", "UNKNOWN")):
        page.goto(f"/predictions/{seeded_predictions[name]['id']}/print")
        # Compared whole: a snapshot template matches when it lists only some of the children.
        spoken = page.locator(".verdict-line").aria_snapshot()
        assert spoken == f'- paragraph:\n  - text: "Verdict:"\n  - strong: {verdict}', spoken
        order = page.locator("main").inner_text()
        if verdict == "UNKNOWN":
            marks = ["Heat map not printed: with an UNKNOWN answer it is not a reading of this image.", "Verdict:"]
            marks += ["Why UNKNOWN:", "Shown for transparency only"]
        else:
            marks = ["Heat map: where the model looked", "Verdict:"]
        marks += ["Model version", "Intended use"]
        places = [order.find(mark) for mark in marks]
        assert -1 not in places and places == sorted(places), (name, list(zip(marks, places, strict=True)))
    page.emulate_media(media="screen")
