"""Browser journeys in Debian's Chromium against the app served by gunicorn with the shipped model.

Every test here is skipped, with the reason, when /usr/bin/chromium is absent (`apt-get install
chromium`; `.ci/run` installs it, so CI always runs them). Screenshots of each step go to
test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.live_server import LiveServer, launch
from tests.e2e.page_checks import ConsoleWatch, accessibility_problems, axe_violations_in_both_themes
from tests.e2e.paths import IMAGES, SCREENSHOTS

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline, so it drives the distribution's Chromium.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]  # containers often give /dev/shm only 64 MB
E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.is_file():
        return
    skip = pytest.mark.skip(reason=f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = launch(tmp_path_factory.mktemp("e2e-instance"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


class Visit:
    """One browser tab of one user, with the checks every page gets."""

    def __init__(self, page, server: LiveServer, screenshot_dir: Path, console: ConsoleWatch):
        self.page = page
        self.server = server
        self.console = console
        self._screenshot_dir = screenshot_dir

    def step(self, name: str, *, full_page: bool = True) -> Path:
        """A page the user sees: check its accessibility basics and run axe-core on it in the light
        and the dark theme (no serious or critical violation), then keep a screenshot of it."""
        problems = accessibility_problems(self.page) + axe_violations_in_both_themes(self.page)
        assert not problems, f"accessibility problems on {self.page.url}:\n" + "\n".join(problems)
        path = self.step_path(name)
        self.page.screenshot(path=path, full_page=full_page)
        return path

    def step_path(self, name: str) -> Path:
        return self._screenshot_dir / f"{name}.png"

    def sign_in(self, username: str) -> None:
        account = self.server.accounts[username]
        self.page.goto("/auth/login")
        self.page.get_by_label("Username").fill(account.username)
        self.page.get_by_label("Password").fill(account.password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r"/screen$"))

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.wait_for_url(re.compile(r"/auth/login"))


@pytest.fixture
def visit(browser, live_server, screenshot_dir) -> Iterator[Visit]:
    context = browser.new_context(
        base_url=live_server.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = ConsoleWatch(page)
    try:
        yield Visit(page, live_server, screenshot_dir, console)
    finally:
        context.close()
    unexpected = console.unexpected()
    if unexpected:
        pytest.fail("the browser reported errors:\n" + "\n".join(unexpected))


@pytest.fixture(scope="session")
def seeded_predictions(live_server) -> dict[str, dict]:
    """A clinician's NORMAL, PNEUMONIA and UNKNOWN predictions, posted through the JSON API."""
    token = live_server.api_token("e2e-clin")
    files = [
        ("file", (name, (IMAGES / name).read_bytes(), "image/jpeg"))
        for name in ("normal.jpeg", "pneumonia.jpeg", "photo.jpg")
    ]
    response = requests.post(
        f"{live_server.url}/api/v1/predictions", files=files, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 201, response.text
    return {p["filename"]: p for p in response.json()["predictions"]}
