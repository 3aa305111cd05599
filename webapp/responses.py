"""How a request wants its answer, and how form errors read, shared by every blueprint."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import flash, g, request, url_for
from flask_wtf import FlaskForm

PROBES = ("/healthz", "/readyz")


def wants_json() -> bool:
    # The API and the probes always speak JSON; the upload page's script asks for it so it can
    # show progress and keep the page, while the same form without JavaScript gets HTML back.
    return (
        request.path.startswith("/api/")
        or request.path in PROBES
        or request.accept_mimetypes.best == "application/json"
    )


def form_errors(form: FlaskForm) -> str:
    """All of a form's validation messages, each naming its field, as sentences for a flash or a JSON
    error. Joined with "; " they read "Field cannot be longer than 64 characters.; Number must be
    between 1 and 3650.", which named neither field (the admin pages' review)."""
    return " ".join(error_text(field, message) for field in form for message in field.errors)


# How WTForms' own messages name the field they refuse ("This field is required.", "Field cannot be
# longer than 64 characters.", "Number must be between 1 and 3650."): the field's label goes there.
STAND_INS = ("This field ", "Field ", "Number ")
# A box's label is a whole sentence, and its message says which box ("Tick the box to confirm the
# deletion."); a hidden field has no name the user ever saw, and its message says what to do.
UNNAMED_FIELDS = ("BooleanField", "HiddenField", "CSRFTokenField")


def error_text(field, message: str) -> str:
    """One of `field`'s messages as a sentence naming the field, for a flash and beside the field alike
    (a screen reader reads it alone, when the field gets the focus)."""
    if field.type not in UNNAMED_FIELDS:
        # "(optional)" says the field may be left empty, not what it is.
        name = field.label.text.removesuffix(" (optional)")
        stand_in = next((s for s in STAND_INS if message.startswith(s)), None)
        if stand_in:
            message = f"{name} {message.removeprefix(stand_in)}"
        elif not re.search(rf"\b{re.escape(name)}\b", message, flags=re.IGNORECASE):
            message = f"{name}: {message}"
    return message if message.endswith((".", "?", "!")) else message + "."


def takes_error_focus(field) -> bool:
    """Whether this refused field is the page's first: that one gets `autofocus` (the field macro).
    A refused form came back with the focus at the top of the page, so a screen reader said nothing
    of the refusal; on the field it reads the label, "invalid" and the reason tied to it."""
    if not field.errors or g.get("error_focus_taken"):
        return False
    g.error_focus_taken = True
    return True


def form_accepted(form: FlaskForm, refused: str) -> bool:
    """Whether the posted `form` validates; if not, the page flashes `refused` and the reasons."""
    if form.validate_on_submit():
        return True
    flash(f"{refused}: {form_errors(form)}", "error")
    return False


def is_local_path(target: str) -> bool:
    """Whether `target` is a path on this site that a Location header can carry as it is: an open
    redirect is a phishing tool, and a control character would make the redirect itself fail.
    Checked on the string as given, because urlsplit() drops tabs and line breaks before it parses."""
    return (
        target.startswith("/")
        and not target.startswith("//")
        and target.isprintable()
        and target.isascii()
        and not any(ch in target for ch in "\\ ")
        and not urlsplit(target).netloc
    )


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site (`is_local_path`), else the upload page."""
    return local_url(target) if target and is_local_path(target) else url_for("screening.upload")


def local_url(target: str) -> str:
    """A path within the app, as `request.path` gives it and a `next` or `back` field carries it, made
    the address the browser is sent to: under the path the app is published at (`request.script_root`,
    empty at /). Sent as it was, it left the app: https://intranet/screen, not https://intranet/cxr/screen."""
    return request.script_root + target
