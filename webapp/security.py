"""Request-wide safety: the sign-in wall, security headers and proxy awareness."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, abort, current_app, flash, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from .api.errors import api_error
from .responses import is_local_path, wants_json

# Endpoints reachable without a session. The API authenticates by bearer token instead.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})
PUBLIC_BLUEPRINTS = frozenset({"health", "api"})
# All that a user whose password an administrator set may reach before choosing their own.
PASSWORD_CHANGE_ENDPOINTS = frozenset({"auth.change_password", "auth.logout"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",  # previews of chosen files are blob: URLs
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def register(app: Flask) -> None:
    if app.config["TRUSTED_PROXIES"]:
        # Behind a reverse proxy, the client address used for sign-in throttling comes from X-Forwarded-For,
        # and the path the proxy publishes the app under (https://intranet/cxr/) from X-Forwarded-Prefix:
        # every link, redirect and cookie path is made under it (docs/deployment.md, "Under a path").
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)
    app.session_interface = PublishedPathSessionInterface()
    app.before_request(refuse_nul_characters)
    app.before_request(require_sign_in)
    app.after_request(add_security_headers)


class PublishedPathSessionInterface(SecureCookieSessionInterface):
    """The session cookie (the sign-in, the CSRF token) sent back only to the path the app is published
    under: Flask's default, APPLICATION_ROOT, is one value for every request and was /, so under
    https://intranet/cxr/ the browser also sent it to every other application on that host, and another
    app's own `session` cookie at / overwrote it (each signed out the other)."""

    def get_cookie_path(self, app: Flask) -> str:
        return app.config["SESSION_COOKIE_PATH"] or request.script_root or "/"


# A NUL in a multipart form's text part is binary data: a file sent without a filename, which
# werkzeug reads as text (curl -F 'files=<film.dcm' where -F 'files=@film.dcm' was meant).
FILE_SENT_AS_TEXT = (
    "The form field '{name}' holds binary data sent as text, not as a file: send it as a file part with "
    "a filename (curl -F '{name}=@path/to/file', not -F '{name}=<path/to/file'). The API takes films in "
    "file parts named 'file' (docs/api.md)."
)


def refuse_nul_characters():
    """A NUL in a page's query or form value is never meant and PostgreSQL cannot store one: a 400
    here, not a database error later. The API's query schemas refuse it themselves, with the
    parameter named (`invalid_filter`), and its bodies are files, read after the token check."""
    if request.blueprint == "api":
        return None
    if request.mimetype == "multipart/form-data":
        binary = next((name for name, value in request.form.items(multi=True) if "\x00" in value), None)
        if binary is not None:
            message = FILE_SENT_AS_TEXT.format(name=binary)
            if wants_json():
                return api_error("no_file", message, 400)
            return render_template("errors/error.html", status=400, message=message), 400
    fields = (request.args, request.form)
    if any("\x00" in key or "\x00" in value for values in fields for key, value in values.items(multi=True)):
        abort(400, "A field of the request contains a NUL character. Remove it and try again.")
    return None


def require_sign_in():
    if request.endpoint is None:  # unknown URL: let the 404 handler answer
        return None
    if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint in PUBLIC_BLUEPRINTS:
        return None
    if not current_user.is_authenticated:
        return signed_out()
    if current_user.must_change_password and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        # An administrator chose this password, so someone besides its owner knows it.
        return redirect(url_for("auth.change_password"))
    return None


FILES_NOT_SENT = (
    "You are signed out (your session ended), so the files were not sent. "
    "Reload this page to sign in again, then send them again."
)
FORM_NOT_SAVED = "You were signed out before this form was sent, so it was not saved. Sign in, then enter it again."
SIGN_IN_AGAIN = "You are signed out (your session ended). Sign in again."


def signed_out():
    """The answer to a browser that is not (or no longer) signed in. A page asked for is shown after
    sign-in. A form that was sent was not saved: the user is told so, and comes back after sign-in to
    the page the form was on (the form's own address takes only POST: that was a 405 page)."""
    if wants_json():  # the upload page's script shows the message and keeps the chosen files
        return api_error("signed_out", FILES_NOT_SENT if request.endpoint == "screening.upload" else SIGN_IN_AGAIN, 401)
    if request.method in ("GET", "HEAD"):
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    flash(FORM_NOT_SAVED, "error")
    return redirect(url_for("auth.login", next=referring_page()))


def referring_page() -> str | None:
    """The page of this app that sent the form (Referrer-Policy same-origin keeps it), as a path within
    the app like `request.path` (the browser's address holds the prefix the app is published under), else None."""
    parts = urlsplit(request.referrer or "")
    root = request.script_root
    if parts.netloc != request.host or not parts.path.startswith(root + "/"):
        return None
    if parts.path.startswith(url_for("auth.login")):
        return None
    target = parts.path.removeprefix(root) + (f"?{parts.query}" if parts.query else "")
    return target if is_local_path(target) else None


def navigated_from_this_site() -> bool:
    """Whether the browser says this GET is the user's own doing: a link on one of our pages, or an
    address they typed or bookmarked. Fetch Metadata (Sec-Fetch-Site) where the browser sends it, else
    a Referer on this host (Referrer-Policy same-origin keeps ours). For a GET that records something
    (a film opened from the worklist): the session cookie (SameSite=Lax) rides along on any top-level
    navigation, so another site could otherwise make the record for the user."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    return bool(request.referrer) and urlsplit(request.referrer).netloc == request.host


def add_security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if current_app.config["HSTS_SECONDS"] and request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", f"max-age={current_app.config['HSTS_SECONDS']}")
    if request.blueprint != "static" and request.endpoint != "static":
        # Pages and images show patient films: never keep them in shared or back-button caches.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
