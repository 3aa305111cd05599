"""WCAG 2.1 AA checks a hospital's procurement runs, measured in the browser: the focus ring's
contrast (1.4.11), reflow at 320 CSS px, i.e. 1280 px at 400% zoom (1.4.10)."""

from __future__ import annotations

import re
import zipfile

from playwright.sync_api import Page, expect

from tests.e2e.paths import IMAGES

# Contrast of two colours by WCAG's relative luminance, computed in the page from computed styles.
_CONTRAST_JS = """
([a, b]) => {
  const rgb = (css) => css.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (css) => {
    const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    const [r, g, b] = rgb(css).map(linear);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [x, y] = [lum(a), lum(b)];
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
}
"""


def contrast(page: Page, a: str, b: str) -> float:
    return page.evaluate(_CONTRAST_JS, [a, b])


def focus_ring_contrasts(page: Page) -> list[tuple[str, float]]:
    """Tab through the page's first controls; each focus ring's colour against the page behind it."""
    rings = []
    for _ in range(20):
        page.keyboard.press("Tab")
        outline, text = page.evaluate(
            "() => { const e = document.activeElement; const s = getComputedStyle(e);"
            " const ring = s.outlineStyle === 'none' ? null : s.outlineColor;"
            " return [ring, (e.textContent || e.id).trim().slice(0, 30)]; }"
        )
        assert outline, f"{text!r} has no visible focus ring"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        rings.append((text, contrast(page, outline, background)))
    return rings


def page_widths(page) -> list[int]:
    """[the document's width, the window's]: the first wider means the page scrolls sideways."""
    return page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def test_the_focus_ring_stands_out_in_both_themes(visit):
    """The amber ring (#f0a500) had 1.9:1 against the light theme's page: a keyboard user with low
    vision lost track of the focus. Non-text contrast needs 3:1 (WCAG 1.4.11)."""
    page = visit.page
    visit.sign_in("e2e-admin")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto("/admin/history")
        weak = [(text, round(ratio, 2)) for text, ratio in focus_ring_contrasts(page) if ratio < 3]
        assert not weak, f"[{scheme}] focus rings under 3:1: {weak}"


# 1280 CSS px at 400% zoom, or a phone: content reflows into one column (WCAG 1.4.10).
NARROW = {"width": 320, "height": 800}


def sticking_out(page: Page, selector: str) -> list[str]:
    """Elements under `selector` whose right edge passes the window's (scrolling the whole page sideways)."""
    return page.evaluate(
        """(selector) => {
          const width = document.documentElement.clientWidth;
          return Array.from(document.querySelectorAll(selector + ', ' + selector + ' *'))
            .filter((e) => e.getBoundingClientRect().right > width + 1)
            .map((e) => `${e.tagName.toLowerCase()}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`);
        }""",
        selector,
    )


def test_the_history_filters_fit_a_narrow_window(visit, seeded_predictions):
    """The model version filter is as wide as its longest option (a 35-character version): at 320 px
    it pushed the filter form, and with it the page, 70 px past the window's edge."""
    page = visit.page
    page.set_viewport_size(NARROW)
    visit.sign_in("e2e-admin")
    for path in ("/admin/history", "/history/"):
        page.goto(path)
        assert not sticking_out(page, "form.filters"), (path, sticking_out(page, "form.filters"))
    visit.step("narrow-01-history-filters")


TABLE_PAGES = [
    "/history/",
    "/admin/history",
    "/admin/summary",
    "/admin/users",
    "/admin/audit",
    "/admin/validation/",
    "/admin/validation/monitoring",
    "/worklist",
    "/admin/dicom/outbox",
]


def test_pages_with_tables_reflow_at_320_px(visit, seeded_predictions):
    """A table of six to nine columns is wider than 320 px; it widened the page itself, so headings,
    filters and the menu all scrolled sideways with it. Only the table may scroll, in its own region
    that the keyboard can reach."""
    page = visit.page
    page.set_viewport_size(NARROW)
    visit.sign_in("e2e-admin")
    for path in TABLE_PAGES:
        page.goto(path)
        widths = page_widths(page)
        assert widths[0] <= widths[1], (path, widths, sticking_out(page, "main")[:5])
        for region in page.locator(".table-scroll").all():
            assert region.get_attribute("tabindex") == "0" and region.get_attribute("aria-label"), path
    visit.step("narrow-02-users")


def test_the_users_actions_are_reachable_at_320_px_without_sideways_scrolling(visit, seeded_predictions):
    """At 320 px the Users table kept its five columns, so every account's forms (deactivate, reset
    password, issue a token) and each token's Revoke sat past the window's edge, reached only by
    scrolling the table sideways. Below the breakpoint each row is a card, each value beside its
    column's name; at 1280 px the table is unchanged."""
    page = visit.page
    visit.sign_in("e2e-admin")
    controls = "table.history td.actions button, table.history td.actions input:not([type=hidden])"
    # At 200% zoom on a 1366 or 1440 px laptop (683, 720 CSS px) the five columns were kept too, and
    # each row's Issue API token button was cut off at the table's edge.
    for size in (NARROW, {"width": 683, "height": 384}, {"width": 720, "height": 450}):
        page.set_viewport_size(size)
        page.goto("/admin/users")
        width = page.evaluate("document.documentElement.clientWidth")
        assert page.locator(controls).count() > 3
        for control in page.locator(controls).all():
            box = control.bounding_box()
            where = (width, control.get_attribute("id") or control.text_content(), box)
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, where
        for region in page.locator(".table-scroll").all():
            assert region.evaluate("(e) => e.scrollWidth <= e.clientWidth + 1"), width
    page.set_viewport_size(NARROW)
    cell = page.locator("table.history tbody td[data-label='Role']").first
    label = cell.evaluate("(e) => getComputedStyle(e, '::before').content")
    assert label == '"Role"', label
    visit.step("narrow-04-users-cards")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/admin/users")
    assert page.locator("table.history thead").first.is_visible()
    assert page.locator("table.history tbody tr").first.evaluate("(e) => getComputedStyle(e).display") == "table-row"
    assert cell.evaluate("(e) => getComputedStyle(e, '::before').content") in ("none", "normal")


def test_a_new_tokens_secret_fits_a_narrow_window(visit):
    """At 320 px the secret shown once after Issue API token, 43 characters without a break, ran past
    the window's edge: the page scrolled sideways and the end of the secret was out of sight."""
    page = visit.page
    page.set_viewport_size(NARROW)
    visit.sign_in("e2e-admin")
    page.goto("/admin/users")
    page.get_by_label("Token name for e2e-clin").fill("narrow window")
    page.get_by_role("button", name="Issue API token for e2e-clin").click()
    secret = page.locator("code.token")
    expect(secret).to_be_visible()
    widths = page_widths(page)
    box = secret.bounding_box()
    assert widths[0] <= widths[1] and box["x"] + box["width"] <= widths[1], (widths, box)
    assert len(secret.inner_text().strip()) >= 40 and "\n" not in secret.text_content()  # one unbroken secret
    visit.step("narrow-05-new-token")


LONG_NAME = "Mueller_Hans_1950_chest_radiograph_lateral_view_" * 2  # 98 characters without a break


def test_a_message_naming_a_long_file_fits_a_narrow_window(visit, tmp_path):
    """At 320 px a refusal that names a file carries its name unbroken: an archive member's (the
    validation page's flash) or an upload's (the upload page's alert) widened the page to 900 px, so
    the message's end was out of sight and the whole page scrolled sideways."""
    page = visit.page
    visit.console.allow(r"status of 4\d\d")
    page.set_viewport_size(NARROW)
    archive = tmp_path / "site.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"../{LONG_NAME}.jpg", b"x")
    film = tmp_path / f"{LONG_NAME}.jpeg"
    film.write_bytes((IMAGES / "normal.jpeg").read_bytes()[:300])
    visit.sign_in("e2e-admin")
    page.goto("/admin/validation/")
    page.get_by_label("Labelled archive (ZIP)").set_input_files(archive)
    page.get_by_role("button", name="Start validation run").click()
    expect(page.get_by_role("alert")).to_contain_text(LONG_NAME)
    widths = page_widths(page)
    assert widths[0] <= widths[1], ("validation page", widths)
    page.goto("/screen")
    page.get_by_label("Choose files").set_input_files(film)
    page.get_by_role("button", name="Screen").click()
    expect(page.locator("#upload-errors")).to_contain_text(LONG_NAME)
    widths = page_widths(page)
    assert widths[0] <= widths[1], ("upload page", widths)
    visit.step("narrow-06-long-file-name")


# The same window in CSS px as 1280 px at 200% zoom, a 1366 px laptop at 200%, and 320 px (400%).
ZOOMED = [{"width": 1280, "height": 800}, {"width": 640, "height": 400}, {"width": 683, "height": 384}, NARROW]


def test_the_users_action_fields_have_visible_labels(visit, seeded_predictions):
    """The new-password, token-name and token-days boxes in each account's row had labels for screen
    readers only: a sighted admin saw blank boxes (one holding 90) beside Reset password and Issue API
    token (WCAG 3.3.2). Each label now shows above its box, within the window at every width, its
    words the start of the box's accessible name (which still names the account, WCAG 2.5.3)."""
    page = visit.page
    visit.sign_in("e2e-admin")
    page.goto("/admin/users")
    fields = page.locator("table.history td.actions input:not([type=hidden])")
    assert fields.count() >= 6
    for size in ZOOMED:
        page.set_viewport_size(size)
        width = page.evaluate("document.documentElement.clientWidth")
        for field in fields.all():
            label = page.locator(f"label[for='{field.get_attribute('id')}']")
            shown = label.evaluate(
                "(e) => Array.from(e.childNodes).filter((n) => !(n.classList && n.classList.contains("
                "'visually-hidden'))).map((n) => n.textContent).join('').trim()"
            )
            box, own = label.bounding_box(), field.bounding_box()
            where = (size["width"], field.get_attribute("id"), box, own)
            assert shown and box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, where
            assert box["y"] + box["height"] <= own["y"] + 1 and abs(box["x"] - own["x"]) < 2, where  # just above
            assert own["x"] >= 0 and own["x"] + own["width"] <= width + 1, where
            name = field.evaluate("(e) => e.labels[0].textContent")
            assert name.startswith(shown) and name.removeprefix(shown).strip(), (shown, name)
    visit.step("users-visible-labels")


def test_the_printable_result_reflows_at_320_px(visit, seeded_predictions):
    """The printable result keeps two columns (films; verdict and notes) at every width: at 320 px
    the notes column ran 25 px past the window and the sheet scrolled sideways."""
    page = visit.page
    page.set_viewport_size(NARROW)
    visit.sign_in("e2e-clin")
    for name in ("pneumonia.jpeg", "photo.jpg"):
        page.goto(f"/predictions/{seeded_predictions[name]['id']}/print")
        assert not sticking_out(page, "main"), (name, sticking_out(page, "main")[:5])
    visit.step("narrow-03-printable")


def test_the_page_wide_single_keys_can_be_turned_off(visit, seeded_predictions):
    """j, k and ? act anywhere on the results page; a speech-input user saying a word outside a text
    field jumped between films. WCAG 2.1.4 asks for a way to turn such keys off."""
    page = visit.page
    visit.sign_in("e2e-clin")
    page.goto("/screen/results?" + "&".join(f"id={p['id']}" for p in seeded_predictions.values()))
    films = page.locator("article.result .pane-film")
    page.locator("h1").click()
    page.keyboard.press("j")
    expect(films.first).to_be_focused()

    page.get_by_text("Keyboard shortcuts").click()
    switch = page.get_by_label("Single-key shortcuts")
    expect(switch).to_be_checked()
    switch.uncheck()
    for _ in range(2):  # on this page, then after a reload (the choice is kept)
        page.locator("h1").click()
        page.keyboard.press("j")
        page.keyboard.press("?")
        assert page.evaluate("document.activeElement.closest('article.result')") is None
        page.reload()
    expect(page.locator("#page-keys")).not_to_be_checked()


def test_a_refused_sign_in_is_read_out_first(visit):
    """After a refused sign-in the page came back with the focus on the username field: a screen
    reader said "Username, edit" and never the refusal printed above the form (WCAG 3.3.1, 4.1.3).
    The refusal now takes the focus as an alert; the next Tab reaches the username."""
    page = visit.page
    visit.console.allow(r"status of 401")
    page.goto("/auth/login")
    page.get_by_label("Username").fill("e2e-nobody")  # no real account's failure count grows
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_focused()
    expect(alert).to_contain_text("password")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Username")).to_be_focused()
    visit.step("sign-in-refused")


def test_the_results_are_read_out_after_an_upload(visit):
    """After an upload the results page opened with the focus at the top of the document: a screen
    reader started on the skip link and the sixteen header controls, and nothing said the films had
    been screened or how. The batch's verdict counts now take the focus on arrival."""
    page = visit.page
    visit.sign_in("e2e-clin")
    page.get_by_label("Choose files").set_input_files([IMAGES / "pneumonia.jpeg", IMAGES / "normal.jpeg"])
    page.get_by_role("button", name="Screen").click()
    page.wait_for_url(re.compile(r"/screen/results\?"))
    counts = page.locator(".batch-counts")
    expect(counts).to_be_focused()
    expect(counts).to_contain_text("2 films")
    expect(counts).to_contain_text("PNEUMONIA 1")

    # A saved review returns to its film (#review-N): that film keeps the view, not the counts, and the
    # focus is on the saved reading, so a screen reader confirms it (the flash at the top goes unread).
    card = page.locator("article.result").last
    card.get_by_role("button", name="Confirm / correct").click()
    page.wait_for_url(re.compile(r"#review-\d+$"))
    expect(counts).not_to_be_focused()
    expect(card.locator("p[id^=review-]")).to_be_focused()
    expect(card.locator("p[id^=review-]")).to_contain_text("Reviewed by e2e-clin")
    assert card.bounding_box()["y"] < 200, "the page did not stay on the reviewed film"


def test_the_bars_are_a_named_group(visit, seeded_predictions):
    """The bars' box had an aria-label on a plain div, which the accessibility tree drops: a screen
    reader met "Normal 3.1%" with nothing saying these were calibrated probabilities, or on UNKNOWN
    the model's scores shown for transparency only."""
    page = visit.page
    visit.sign_in("e2e-clin")
    page.goto("/screen/results?" + "&".join(f"id={p['id']}" for p in seeded_predictions.values()))
    answered = page.locator(f"#prediction-{seeded_predictions['pneumonia.jpeg']['id']}")
    bars = answered.get_by_role("group", name="Calibrated probabilities")
    expect(bars).to_have_count(1)
    expect(bars.get_by_role("img", name=re.compile(r"^Pneumonia \d+\.\d%$"))).to_have_count(1)
    unknown = page.locator(f"#prediction-{seeded_predictions['photo.jpg']['id']}")
    unknown.get_by_text("Show model scores").click()
    expect(unknown.get_by_role("group", name="Model scores")).to_have_count(1)
