"""Where the keyboard focus lands when a page refuses what was sent: on the refusal, so a screen
reader says it, and the next Tab goes on from there (WCAG 3.3.1, 2.4.3)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.paths import IMAGES


def test_a_refused_upload_takes_the_focus(visit, tmp_path):
    """The Screen button is disabled while the upload runs, and a disabled button loses the focus:
    after a refusal the focus was on the page itself, a screen reader said nothing more and the next
    Tab started again at the top of the page."""
    page = visit.page
    visit.console.allow(r"status of 4\d\d")
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes((IMAGES / "normal.jpeg").read_bytes()[:300])
    visit.sign_in("e2e-clin")
    page.get_by_label("Choose files").set_input_files(broken)
    screen = page.get_by_role("button", name="Screen")
    screen.focus()
    page.keyboard.press("Enter")
    refusal = page.get_by_role("alert").filter(has_text="broken.jpeg")
    expect(refusal).to_be_focused()
    page.keyboard.press("Tab")
    expect(screen).to_be_focused()


def test_a_refused_upload_without_script_takes_the_focus(browser, live_server, tmp_path):
    """Without the script the server answers the form with the upload page and its refusal: the
    refusal takes the focus on arrival, as a refused sign-in does."""
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        account = live_server.accounts["e2e-clin"]
        page.goto("/auth/login")
        page.get_by_label("Username").fill(account.username)
        page.get_by_label("Password").fill(account.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/screen$"))
        broken = tmp_path / "broken.jpeg"
        broken.write_bytes((IMAGES / "normal.jpeg").read_bytes()[:300])
        page.get_by_label("Choose files").set_input_files(broken)
        page.get_by_role("button", name="Screen").click()
        expect(page.locator("#upload-errors")).to_contain_text("broken.jpeg")
        expect(page.locator("#upload-errors")).to_be_focused()
    finally:
        context.close()


def test_a_refused_form_puts_the_focus_on_its_first_refused_field(visit, seeded_predictions):
    """A form the server sent back with errors (a new password typed twice differently, a username
    taken, the history and audit filters with From after To) came back with the focus at the top of
    the page: a screen reader read the menu and never said the form had been refused. The first
    refused field now takes the focus, and a screen reader reads its label, "invalid" and the reason."""
    page = visit.page
    visit.console.allow(r"status of 400")
    visit.sign_in("e2e-admin")

    page.goto("/auth/password")
    page.get_by_label("Current password").fill("not checked: the new ones differ")
    page.get_by_label("New password", exact=True).fill("a long enough new phrase 1")
    page.get_by_label("New password again").fill("a long enough new phrase 2")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    refused = page.get_by_label("New password again")
    expect(refused).to_be_focused()
    expect(refused).to_have_accessible_description(re.compile("differ"))

    page.goto("/admin/users")
    page.get_by_label("Username", exact=True).fill("e2e-clin")
    page.get_by_label("Initial password").fill("a long enough new phrase 1")
    page.get_by_label("Initial password").press("Enter")
    page.wait_for_load_state()
    expect(page.get_by_label("Username", exact=True)).to_be_focused()

    for path in ("/history/", "/admin/history", "/admin/audit"):
        page.goto(path)
        page.get_by_label("From", exact=True).fill("2026-12-05")
        page.get_by_label("To", exact=True).fill("2026-12-01")
        page.get_by_role("button", name="Filter").press("Enter")
        page.wait_for_url(re.compile(r"date_to=2026-12-01"))
        expect(page.get_by_label("To", exact=True)).to_be_focused()
        expect(page.get_by_label("To", exact=True)).to_have_accessible_description(re.compile("swap the two dates"))
    visit.step("refused-audit-filters")  # axe on a refused form, in both themes
