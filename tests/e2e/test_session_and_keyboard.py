"""Signing out really ends the session, the upload works from the keyboard alone, and the pages
that are not part of a journey pass the same accessibility checks."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.paths import IMAGES

MAX_TABS = 30


def tab_to(page: Page, element_id: str) -> None:
    """Press Tab until the element with this id has the keyboard focus."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


def test_sign_out_ends_the_session(visit):
    page = visit.page
    visit.sign_in("e2e-clin")
    page.get_by_label("Choose files").set_input_files(IMAGES / "pneumonia.jpeg")
    page.get_by_role("button", name="Screen").click()
    page.wait_for_url(re.compile(r"/screen/results\?id=\d+$"))
    results_url = page.url
    expect(page.locator("article.result .filename")).to_have_text("pneumonia.jpeg")

    # Pages and images of patients' films are never kept in the browser's cache.
    private = [
        results_url,
        page.locator("img.radiograph").get_attribute("src"),
        page.locator("img.heatmap").get_attribute("src"),
        "/history/",
    ]
    for url in private:
        response = page.request.get(url)
        assert response.status == 200, url
        assert "no-store" in response.headers.get("cache-control", ""), f"{url} may be cached"

    visit.sign_out()
    expect(page.locator(".flash.info")).to_have_text("You are signed out.")
    visit.step("session-01-signed-out")

    # The back button must not bring the results back from a cache.
    page.go_back()
    page.wait_for_url(re.compile(r"/auth/login"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.locator("main")).not_to_contain_text("pneumonia.jpeg")
    expect(page.locator("article.result")).to_have_count(0)
    page.reload()
    page.wait_for_url(re.compile(r"/auth/login"))
    for url in private:
        response = page.goto(url)
        assert re.search(r"/auth/login\?next=", page.url), f"{url} is open after sign-out"
        assert response.status == 200 and "pneumonia.jpeg" not in page.content()
    visit.step("session-02-back-lands-on-sign-in")


def test_keyboard_only_screening(visit):
    page = visit.page
    account = visit.server.accounts["e2e-clin"]
    page.goto("/auth/login")
    # The username field has the focus on arrival; the rest is typing, Tab and Enter.
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(account.username)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/screen$"))

    tab_to(page, "files")
    # A file dialog is the operating system's, not the page's: hand the focused control its file.
    page.locator(":focus").set_input_files(IMAGES / "normal.jpeg")
    expect(page.locator("#previews li")).to_have_count(1)
    visit.step("keyboard-01-file-chosen")
    tab_to(page, "submit")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/screen/results\?id=\d+$"))
    card = page.locator("article.result")
    expect(card).to_have_count(1)

    # The heat map toggle answers to the space bar.
    toggle = card.get_by_label("Show heat map")
    toggle.focus()
    page.keyboard.press("Space")
    expect(toggle).not_to_be_checked()
    expect(card.locator("img.heatmap")).to_be_hidden()
    visit.step("keyboard-02-result-heatmap-off")


def test_other_pages_pass_the_checks(visit):
    visit.console.allow(r"Failed to load resource: the server responded with a status of 404")
    page = visit.page
    page.goto("/auth/login")
    visit.step("pages-01-sign-in")
    visit.sign_in("e2e-admin")
    response = page.goto("/no/such/page")
    assert response.status == 404
    expect(page.locator(".error-message")).to_have_text("There is nothing at this address.")
    visit.step("pages-02-not-found")
    page.goto("/history/")
    expect(page.get_by_role("heading", level=1)).to_have_text("My predictions")
    visit.step("pages-03-my-predictions")
    page.get_by_role("link", name="Password").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Change your password")
    visit.step("pages-04-change-password")


def test_the_header_fits_a_tablet_window(visit):
    """On a portrait tablet (768 px) the administrator's eleven links ran off the right edge: the page
    scrolled sideways and "Password" sat outside the window. The menu wraps now."""
    page = visit.page
    page.set_viewport_size({"width": 768, "height": 1024})
    visit.sign_in("e2e-admin")
    for path in ("/screen", "/admin/history"):
        page.goto(path)
        width = page.evaluate("document.documentElement.clientWidth")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, path
        for link in page.get_by_role("navigation", name="Main").get_by_role("link").all():
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (path, link.inner_text())
    visit.step("tablet-01-admin-history")


def test_a_skip_link_leads_past_the_menu(visit):
    """Keyboard users had to Tab through fifteen header controls (the administrator's menu, the
    theme switch, sign-out) on every page before reaching its content (WCAG 2.4.1)."""
    page = visit.page
    visit.sign_in("e2e-admin")
    page.goto("/admin/history")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # shown while it has the focus
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Verdict")).to_be_focused()  # the first control of the page's own content
