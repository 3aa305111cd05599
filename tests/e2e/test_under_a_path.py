"""A clinician on a shared intranet host where the hospital's nginx publishes the app under /cxr/
(docs/deployment.md, "Under a path") and another application answers at /, with a `session` cookie
of its own: sign-in from a bookmarked page, an upload, the result with its images, a reading saved,
the history and sign-out, and not one request of the app's pages leaves /cxr/."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.page_checks import ConsoleWatch
from tests.e2e.paths import IMAGES
from tests.nginx_server import PathProxy


def test_a_clinician_works_under_a_path_of_a_shared_host(browser, live_server):
    account = live_server.accounts["e2e-clin"]
    with PathProxy(live_server.url, "/cxr") as proxy:
        context = browser.new_context(base_url=proxy.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        console = ConsoleWatch(page)
        other_application = f"{proxy.url}/"
        left = []  # requests of the app's pages that went elsewhere on the host (the previews are blob: URLs)
        page.on("request", lambda r: left.append(r.url) if re.match(rf"{proxy.url}/(?!cxr/)", r.url) else None)
        try:
            page.goto("/cxr/history/")  # a bookmark: sign in first, then back to it
            page.get_by_label("Username").fill(account.username)
            page.get_by_label("Password").fill(account.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{proxy.url}/cxr/history/")
            expect(page.locator("link[rel=stylesheet]")).to_have_attribute("href", re.compile(r"^/cxr/static/"))

            # The other application sets its own `session` cookie at /: the app's own, at /cxr, stays.
            page.goto(other_application)
            page.goto("/cxr/screen")
            expect(page.get_by_role("button", name="Screen")).to_be_visible()

            page.get_by_label("Choose files").set_input_files(IMAGES / "pneumonia.jpeg")
            page.get_by_role("button", name="Screen").click()  # sent by upload.js, then sent on to the results
            page.wait_for_url(re.compile(r"/cxr/screen/results\?id=\d+$"))
            card = page.locator("article.result")
            expect(card).to_have_count(1)
            for image in card.locator("img:visible").all():  # the film and the heat map's key, at least
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            expect(card.locator("img.radiograph")).to_have_attribute("src", re.compile(r"^/cxr/predictions/\d+/"))

            card.get_by_role("button", name="Confirm / correct").click()
            page.wait_for_url(re.compile(r"/cxr/screen/results\?id=\d+#review-\d+$"))
            expect(page.locator(".flash.info")).to_contain_text("Review saved")

            page.get_by_role("link", name="My predictions").click()
            page.wait_for_url(f"{proxy.url}/cxr/history/")
            expect(page.locator("table.history td.filename").first).to_have_text("pneumonia.jpeg")
            assert [(c["name"], c["path"]) for c in context.cookies() if c["value"] != "another-application"] == [
                ("session", "/cxr")
            ]

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{proxy.url}/cxr/auth/login")
        finally:
            context.close()
    assert left == [other_application], f"requests outside /cxr/: {left}"
    assert not console.unexpected(), console.unexpected()
