"""Errors reach a screen-reader user: a refused control is marked invalid and described by its error
message, so the message is read when the control gets the focus (WCAG 3.3.1, 1.3.1); an error page's
title says what happened."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from tests.helpers import csrf_token


class Elements(HTMLParser):
    """Every element's attributes and text, by id."""

    def __init__(self, html: str):
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self._open: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        element = dict(attrs) | {"tag": tag, "text": ""}
        if element.get("id"):
            self.by_id[element["id"]] = element
        if tag not in {"input", "br", "meta", "link", "img"}:
            self._open.append(element)

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data


def error_read_with(html: str, control_id: str) -> str:
    """The text a screen reader gives as the control's description, after checking it is marked invalid."""
    elements = Elements(html).by_id
    control = elements[control_id]
    assert control.get("aria-invalid") == "true", f"#{control_id} is not marked invalid: {control}"
    return " ".join(elements[i]["text"].strip() for i in control.get("aria-describedby", "").split())


def test_a_refused_password_change_says_why_at_each_field(client, auth, clinician_user):
    auth.login("clin")
    token = csrf_token(client, "/auth/password")
    page = client.post("/auth/password", data={"csrf_token": token}).get_data(as_text=True)
    for control, label in (("current_password", "Current"), ("new_password", "New"), ("confirm", "New")):
        assert f"{label} password" in error_read_with(page, control)  # its field named (test_form_messages)


def test_the_user_form_keeps_its_hint_beside_the_error(client, auth, admin_user):
    auth.login("admin")
    token = csrf_token(client, "/admin/users")
    page = client.post("/admin/users", data={"csrf_token": token, "username": "x" * 3}).get_data(as_text=True)
    described = error_read_with(page, "password")
    assert "Initial password is required." in described and "At least 12 characters" in described


@pytest.mark.parametrize("path", ["/admin/history", "/history/", "/admin/audit"])
def test_a_refused_filter_is_tied_to_its_field(client, auth, admin_user, path):
    auth.login("admin")
    page = client.get(f"{path}?date_from=yesterday").get_data(as_text=True)
    assert "Not a valid date" in error_read_with(page, "date_from")


@pytest.mark.parametrize(
    ("path", "words"),
    [("/no/such/page", "There is nothing at this address."), ("/admin/users", "You do not have access")],
)
def test_an_error_pages_title_says_what_happened(client, auth, clinician_user, path, words):
    """The title of an error page was the bare status ("404 · CXR Screen"), the first thing a screen
    reader says on arrival (WCAG 2.4.2)."""
    auth.login()
    title = re.search(r"<title>(.*?)</title>", client.get(path).get_data(as_text=True), flags=re.S).group(1)
    assert words in html.unescape(title), title
