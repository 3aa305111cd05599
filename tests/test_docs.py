"""Promises the README and the configuration table make to a newcomer and to IT, kept true by tests."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEPLOYMENT = ROOT / "docs" / "deployment.md"
# Settings read only by the test suite, not by a deployment.
TEST_ONLY_SETTINGS = {"TEST_DATABASE_URL"}


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


def settings_read() -> set[str]:
    """Every environment variable the app, gunicorn, the job worker, the DICOM node and the image's
    scripts read by name (webapp/config.py and the modules beside it)."""
    pattern = re.compile(
        r"(?:env_int|env_str|env_bool|env_float|_ae_title|os\.environ\.get|os\.getenv)\(\s*\"([A-Z][A-Z0-9_]+)\""
    )
    sources = [*(ROOT / "webapp").rglob("*.py"), *(ROOT / "deploy").glob("*.py"), *(ROOT / "docker").glob("*.py")]
    sources.append(ROOT / "gunicorn.conf.py")
    return {name for path in sources for name in pattern.findall(path.read_text())} - TEST_ONLY_SETTINGS


def test_the_configuration_table_names_every_setting():
    """docs/deployment.md's table says it lists every variable the app reads; the DICOM node's, the job
    queue's and the validation limits were only in their own pages (one of them in none)."""
    rows = [
        line
        for line in DEPLOYMENT.read_text().split("\n## Configuration\n", 1)[1].splitlines()
        if line.startswith("| `")
    ]
    # A variable is named in some row (DIRECTORY_RECHECK_MINUTES is told in the LDAP row), or a
    # family is named by its prefix (`LDAP_*`, with its own table in sign-in.md).
    named = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}
    prefixes = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+_)\*`", row)}
    read = settings_read()
    assert len(read) > 50  # the scan finds the settings (a broken scan would pass vacuously)
    missing = {name for name in read if name not in named and not name.startswith(tuple(prefixes))}
    assert not missing


def test_every_relative_link_in_the_docs_resolves():
    """docs/model.md linked `reports/metrics.json` and showed `reports/roc.png` after it moved from the
    README into docs/: relative to docs/ those are no files, so every figure was a broken image."""
    pages = [
        README,
        *(ROOT / "docs").glob("*.md"),
        ROOT / "benchmarks" / "README.md",
        ROOT / "tests" / "e2e" / "README.md",
    ]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken
