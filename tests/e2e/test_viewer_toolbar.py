"""The film viewer's tool strip by keyboard: it says role="toolbar", so a screen reader announces
the WAI-ARIA toolbar pattern (one Tab stop, Left/Right, Home/End between the buttons)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.test_reading_view import card_for, open_results, scale_of, slider


def focused_text(page) -> str:
    return page.evaluate("document.activeElement.textContent.trim()")


def test_the_tool_strip_is_one_tab_stop_with_arrow_keys(visit, seeded_predictions):
    """Each of the nine buttons was its own Tab stop and the arrow keys did nothing: a keyboard user
    tabbed nine times past the strip of every film to reach its sliders, and a screen reader that
    announced a toolbar promised keys that did not work."""
    page = visit.page
    visit.sign_in("e2e-clin")
    open_results(page, list(seeded_predictions.values()))
    viewer = card_for(page, "pneumonia.jpeg").locator("[data-viewer]")
    expect(viewer).to_have_attribute("data-ready", "true")
    toolbar = viewer.get_by_role("toolbar")

    toolbar.get_by_role("button", name="Zoom in").focus()
    page.keyboard.press("ArrowRight")
    expect(toolbar.get_by_role("button", name="Zoom out")).to_be_focused()
    page.keyboard.press("End")
    expect(toolbar.get_by_role("button", name="Reset")).to_be_focused()
    page.keyboard.press("ArrowRight")  # wraps round to the first
    expect(toolbar.get_by_role("button", name="Zoom in")).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(toolbar.get_by_role("button", name="Reset")).to_be_focused()
    page.keyboard.press("Home")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    invert = toolbar.get_by_role("button", name="Invert")
    expect(invert).to_be_focused()
    page.keyboard.press("Enter")
    expect(invert).to_have_attribute("aria-pressed", "true")

    # One Tab leaves the strip for the window slider; Shift+Tab comes back to the button last used.
    page.keyboard.press("Tab")
    window = slider(viewer, "Window")
    expect(window).to_be_focused()
    # The slider's own arrow keys still move the slider.
    page.keyboard.press("ArrowLeft")
    expect(window).to_have_value("99")
    page.keyboard.press("Shift+Tab")
    expect(invert).to_be_focused()
    assert toolbar.locator("button[tabindex='0']").count() == 1

    # The film's own keys and the page's j / k still work.
    viewer.locator(".pane-film").focus()
    page.keyboard.press("+")
    assert scale_of(viewer.locator(".pane-film .stage")) > 1.2
    toolbar.get_by_role("button", name="Fit").focus()
    page.keyboard.press("j")
    expect(card_for(page, "photo.jpg").locator(".pane-film")).to_be_focused()
    visit.step("viewer-toolbar-keys")
