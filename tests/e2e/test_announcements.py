"""What a screen reader must be told without looking for it: the one-time API token secret, and the
upload's progress (a live region is only read out if it was in the page, empty, before its text)."""

from __future__ import annotations

import re

from playwright.sync_api import expect


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
