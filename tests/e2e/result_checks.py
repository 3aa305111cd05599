"""What every result card must show, wherever it appears (results page or detail view)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, expect

from webapp.notes import NOTES

# Share of an image's pixels that are clearly coloured (the radiograph itself is grey).
_COLOURED_FRACTION_JS = """
img => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured += 1;
  }
  return coloured / (data.length / 4);
}
"""


# Films load lazily: wait for one that is on screen to arrive.
_LOADED_JS = """
img => img.complete ? img.naturalWidth > 0
  : new Promise((done) => img.addEventListener('load', () => done(img.naturalWidth > 0), {once: true}))
"""
# The verdict colours as the page defines them (both themes), to tell a verdict-coloured bar from a grey one.
_VERDICT_FILLS_JS = """
() => ['normal', 'pneumonia', 'unknown'].map((name) => {
  const probe = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
  probe.style.fill = `var(--${name})`;
  document.querySelector('svg.bar').appendChild(probe);
  const fill = getComputedStyle(probe).fill;
  probe.remove();
  return fill;
})
"""


def image_loaded(image: Locator) -> bool:
    image.scroll_into_view_if_needed()
    return image.evaluate(_LOADED_JS)


def coloured_fraction(image: Locator) -> float:
    return image.evaluate(_COLOURED_FRACTION_JS)


def open_unknown_scores(card: Locator) -> None:
    """On UNKNOWN the model's scores are folded away ("Show model scores") and grey: open them and
    check that no bar is drawn in a verdict colour."""
    scores = card.locator("details.model-scores")
    expect(scores).to_have_count(1)
    assert scores.get_attribute("open") is None, "an UNKNOWN result must not show its scores unasked"
    expect(card.locator(".bar-row").first).to_be_hidden()
    scores.locator("summary").click()
    expect(card.locator(".bar-row").first).to_be_visible()
    verdict_fills = set(card.page.evaluate(_VERDICT_FILLS_JS))
    for fill in card.locator("rect.bar-fill").evaluate_all("rs => rs.map((r) => getComputedStyle(r).fill)"):
        assert fill not in verdict_fills, f"an UNKNOWN result's score bar is drawn in a verdict colour ({fill})"


def check_bars(card: Locator) -> dict[str, float]:
    """Each bar's drawn width, relative to its track, is the probability printed beside it."""
    if card.get_attribute("data-label") == "UNKNOWN":
        open_unknown_scores(card)
    else:
        expect(card.locator("details.model-scores")).to_have_count(0)
    shown = {}
    rows = card.locator(".bar-row")
    expect(rows).to_have_count(2)
    for i in range(2):
        row = rows.nth(i)
        name = row.locator(".bar-name").inner_text().strip().upper()
        percent = float(row.locator(".bar-value").inner_text().strip().rstrip("%"))
        fill = row.locator("rect.bar-fill").evaluate("r => r.getBoundingClientRect().width")
        track = row.locator("rect.bar-bg").evaluate("r => r.getBoundingClientRect().width")
        assert track > 50, f"the {name} bar's track is not drawn ({track}px)"
        assert fill / track == pytest.approx(percent / 100, abs=0.005), f"{name} bar width != {percent}%"
        shown[name] = percent / 100
    assert sum(shown.values()) == pytest.approx(1, abs=0.002)
    return shown


def check_heatmap_toggle(card: Locator) -> None:
    card.scroll_into_view_if_needed()
    toggle = card.get_by_label("Show heat map")
    heatmap = card.locator("img.heatmap")
    if card.get_attribute("data-label") == "UNKNOWN":
        # Like the scores, an UNKNOWN answer's heat map is no reading of the image: off until asked for.
        expect(toggle).not_to_be_checked()
        expect(heatmap).to_be_hidden()
        expect(card.locator(".heatmap-note")).to_contain_text("not a reading of this image")
        toggle.check()
    expect(toggle).to_be_checked()
    expect(heatmap).to_be_visible()
    assert image_loaded(heatmap) and image_loaded(card.locator("img.radiograph"))
    if card.get_attribute("data-label") == "PNEUMONIA":
        # A pneumonia verdict must point somewhere: its heat map has to highlight a region.
        assert coloured_fraction(heatmap) > 0.01, "the heat map of a PNEUMONIA verdict highlights nothing"
    toggle.uncheck()
    expect(heatmap).to_be_hidden()
    expect(card.locator("img.radiograph")).to_be_visible()
    toggle.check()
    expect(heatmap).to_be_visible()


def check_verdict(card: Locator, expected: str) -> None:
    label = card.locator(".verdict-label").inner_text().strip()
    assert label == expected, f"{card.locator('.filename').inner_text()}: {label}, expected {expected}"
    expect(card.locator(f".badge-{label.lower()}")).to_have_text(label)
    probabilities = check_bars(card)
    threshold_text = card.locator(".threshold").filter(has_text="Decision threshold").inner_text()
    threshold = float(re.search(r"[\d.]+$", threshold_text.strip()).group())
    if label == "PNEUMONIA":
        assert probabilities["PNEUMONIA"] >= threshold - 0.001
    elif label == "NORMAL":
        assert probabilities["PNEUMONIA"] < threshold + 0.001
    notes = card.locator("section.notes")
    expect(notes).to_have_attribute("data-notes-for", label)
    expect(notes.locator("h3")).to_have_text(NOTES[label]["title"])
    expect(notes.locator("li")).to_have_count(len(NOTES[label]["points"]))
    reason = card.locator(".unknown-reason")
    if label == "UNKNOWN":
        expect(reason).to_contain_text("Why UNKNOWN:")
        assert len(reason.inner_text()) > len("Why UNKNOWN:") + 10, "the UNKNOWN reason is empty"
    else:
        expect(reason).to_have_count(0)
    expect(card.locator(".notice")).to_contain_text("not a diagnosis")
