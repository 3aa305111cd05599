"""Checks run on every page a journey visits: basic accessibility, the axe-core engine in both
themes, and a clean browser console."""

from __future__ import annotations

import re

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import ConsoleMessage, Error, Page

# axe-core ships inside the axe-playwright-python wheel (no network); it is injected through
# DevTools, so the app's Content-Security-Policy does not stop it.
_AXE = Axe()
BLOCKING_IMPACTS = ("serious", "critical")

# Runs in the page (through DevTools, so the app's CSP does not apply). Lists what a screen-reader
# user would miss: form controls without a label, images without alt text, graphics and buttons
# without a name.
_A11Y_PROBLEMS_JS = """
() => {
  const problems = [];
  const describe = (el) => el.outerHTML.slice(0, 160);
  const labelled = (el) => {
    if ((el.getAttribute('aria-label') || '').trim()) return true;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(/\\s+/).every((id) => document.getElementById(id))) return true;
    return Array.from(el.labels || []).some((label) => label.textContent.trim());
  };
  const ignoredTypes = new Set(['hidden', 'submit', 'button', 'reset', 'image']);
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.tagName === 'INPUT' && ignoredTypes.has(el.type)) continue;
    if (!labelled(el)) problems.push('form control without a label: ' + describe(el));
  }
  for (const el of document.querySelectorAll('img')) {
    if (!el.hasAttribute('alt')) problems.push('image without alt text: ' + describe(el));
  }
  for (const el of document.querySelectorAll('svg[role=img]')) {
    if (!labelled(el)) problems.push('graphic without a name: ' + describe(el));
  }
  for (const el of document.querySelectorAll('button, input[type=submit], a[href]')) {
    const name = (el.getAttribute('aria-label') || el.textContent || el.value || '').trim();
    if (!name) problems.push('control without a name: ' + describe(el));
  }
  if (!document.documentElement.lang) problems.push('the page does not declare its language');
  if (!document.title.trim()) problems.push('the page has no title');
  if (document.querySelectorAll('h1').length !== 1) problems.push('the page should have exactly one h1');
  return problems;
}
"""


def accessibility_problems(page: Page) -> list[str]:
    return page.evaluate(_A11Y_PROBLEMS_JS)


def axe_violations(page: Page) -> list[str]:
    """Serious and critical axe-core violations on the page as it is rendered now."""
    results = _AXE.run(page, options={"resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at " + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in results.response["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]


def axe_violations_in_both_themes(page: Page) -> list[str]:
    """axe-core with the system set to light and to dark (a user's "As the system" theme follows it)."""
    problems = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems += [f"[{scheme}] {p}" for p in axe_violations(page)]
    page.emulate_media(color_scheme="light")
    return problems


class ConsoleWatch:
    """Collects console errors and uncaught page errors; tests allow the ones they cause on purpose."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        self._allowed: list[re.Pattern] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def allow(self, pattern: str) -> None:
        """Accept console errors matching `pattern` (e.g. the 4xx a test provokes on purpose)."""
        self._allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self._allowed)]

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error at {message.location.get('url')}: {message.text}")

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught page error: {error.message}")
