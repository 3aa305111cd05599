"""Promises the README and the configuration table make to a newcomer and to IT, kept true by tests."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) <= 8000
    first_screen = "\n".join(text.splitlines()[:30])
    assert "./scripts/run.sh" in first_screen and "./scripts/test.sh" in first_screen


def test_readme_shows_the_four_journey_screenshots():
    """The upload page, a PNEUMONIA result with its heat map, an UNKNOWN result and the admin history."""
    shown = set(re.findall(r"!\[[^\]]+\]\((docs/screenshots/[^)]+\.png)\)", README.read_text()))
    wanted = {
        f"docs/screenshots/{name}.png"
        for name in ("clinician-02-previews", "result-pneumonia", "result-unknown", "admin-01-history")
    }
    assert wanted <= shown
    assert all((ROOT / path).is_file() for path in shown)
