"""The worklist reloads itself every 30 s (a meta refresh): a reader in the middle of it keeps their place."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from webapp.pacs.routes import WORKLIST_REFRESH_SECONDS


def test_the_worklist_refresh_keeps_the_keyboard_focus(visit):
    """Each timed reload dropped the keyboard focus to the top of the document: a keyboard user in the
    table was sent back to the skip link every 30 s (the scroll position was kept by the browser, the
    focus was not). The focused control now takes the focus again after the reload, and the page
    does not scroll to it."""
    page = visit.page
    page.set_viewport_size({"width": 320, "height": 300})  # the table lies below the first screen
    visit.sign_in("e2e-admin")
    page.goto("/worklist")
    region = page.get_by_role("region", name="Films from the PACS")
    region.focus()
    page.evaluate("window.scrollTo(0, 200)")
    scrolled = page.evaluate("window.scrollY")
    with page.expect_navigation(timeout=(WORKLIST_REFRESH_SECONDS + 15) * 1000):
        pass  # the page's own refresh
    expect(page).to_have_url(re.compile(r"/worklist\?auto_refresh=1$"))
    expect(region).to_be_focused()
    assert page.evaluate("window.scrollY") == scrolled

    # Stopping the refresh is a plain link: the page it opens neither reloads nor moves the focus.
    page.get_by_role("link", name="Stop refreshing").click()
    expect(page).to_have_url(re.compile(r"refresh=off"))
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)
    visit.step("worklist-refreshed")
