"""Sessions that end when they should.

Session state stays in Flask's signed cookie, and each one carries the *session version* of its user,
checked against the database on every request. Raising a user's version (sign-out, password change or
reset, deactivation, role change) ends all of that user's sessions at once, on every workstation and
every worker, without a server-side session store to run, back up and expire. A cookie copied before
any of those is refused after it. Idle and absolute timeouts are timestamps in the same signed cookie.
"""

from __future__ import annotations

import logging
import time

from flask import current_app, flash, request, session, url_for
from flask_login import login_user

from ..access import revoke_tokens
from ..extensions import db
from ..models import User, record_audit
from .directory import ACTOR

log = logging.getLogger(__name__)

VERSION, SIGNED_IN_AT, SEEN_AT = "session_version", "signed_in_at", "seen_at"
# The query argument a page's own timed refresh adds (auto_refresh_url): not a person at the keyboard.
AUTO_REFRESH = "auto_refresh"


def auto_refresh_url() -> str:
    """This page's address for its <meta http-equiv="refresh">, marked so the refresh does not count
    as activity: a worklist left open must not keep the session alive past the idle timeout."""
    arguments = {**request.view_args, **request.args.to_dict(), AUTO_REFRESH: "1"}
    return url_for(request.endpoint, **arguments)


# The query argument that stops a page's timed refresh (WCAG 2.2.1): each reload sends a screen
# reader back to the top of the page and takes the keyboard focus away.
STOP_REFRESH = "refresh"


def refresh_stopped() -> bool:
    return request.args.get(STOP_REFRESH) == "off"


def refresh_switch_url() -> str:
    """This page's address with its timed refresh switched the other way: stopped, or going again."""
    arguments = {**request.view_args, **request.args.to_dict()}
    arguments.pop(AUTO_REFRESH, None)
    if refresh_stopped():
        arguments.pop(STOP_REFRESH)
    else:
        arguments[STOP_REFRESH] = "off"
    return url_for(request.endpoint, **arguments)


def now() -> int:
    return int(time.time())


def begin(user: User) -> None:
    """Start a fresh session for `user`: nothing of the anonymous one survives, the CSRF token included."""
    session.clear()
    login_user(user)
    moment = now()
    session[VERSION] = user.session_version
    session[SIGNED_IN_AT] = moment
    session[SEEN_AT] = moment
    # The browser drops the cookie at the absolute timeout too (PERMANENT_SESSION_LIFETIME); the server
    # does not rely on it.
    session.permanent = True


def end_sessions(user: User) -> None:
    """End every browser session of `user` at once (the caller commits): sign-out, own password
    change, a role change. The user's API tokens are left alone."""
    # In the database, not version-read-plus-one: two ends at once (a reset as the user changes their
    # password, a sign-out elsewhere) both read the same version and wrote the same next one, so the
    # session one of them began carried a version the other had meant to end.
    user.session_version = User.session_version + 1


def end_all_access(user: User, reason: str = "access ended", actor: str | None = None) -> int:
    """End everything `user` is signed in with (the caller commits): a password reset by someone else,
    deactivation. The one place where a user's access ends: sessions, and API tokens (revoked and
    audited, `reason` in the trail, by `actor`: the signed-in user or the shell's `cli:NAME` when None, see access.py).
    Returns how many tokens were revoked."""
    end_sessions(user)
    return revoke_tokens(user, actor=actor, reason=reason)


def end_directory_access(user: User, why: str) -> bool:
    """The directory no longer vouches for `user` (a leaver, in neither group, another entry under its
    name, directory sign-in switched off): end its sessions and tokens and write `access_ended`, once,
    as the directory, since nobody signed in did it (the caller commits). Whether this request ended
    it: of a refused sign-in and the re-check meeting the same account at once, one does."""
    if not user.lose_directory_access():  # already ended: by another request, or the re-check
        return False
    end_all_access(user, reason=why, actor=ACTOR)
    record_audit(ACTOR, "access_ended", user.username, why)
    return True


# Shown to a directory account's session refused while directory sign-in is switched off (User.cut_off).
DIRECTORY_OFF = (
    "Your account comes from the staff directory, and directory sign-in is switched off on this CXR Screen, "
    "so it cannot be used. Ask your IT service desk: an administrator can make it a local account with its "
    "own password."
)
DIRECTORY_OFF_REASON = "directory sign-in switched off (LDAP_URL empty)"


def end_cut_off(user: User) -> bool:
    """A directory account met while directory sign-in is switched off (its session or a token; not a
    sign-in attempt, which anyone can make for any name):
    end its sessions and tokens and say so in the audit trail and the log, once (the caller commits), as
    for a leaver. Revoked, not just refused: LDAP_URL set again later, maybe to another directory whose
    "alice" is someone else, must not bring the old alice's tokens back with a sign-in. Whether this
    request ended it."""
    if not end_directory_access(user, DIRECTORY_OFF_REASON):
        return False
    log.warning("directory account %s has no access: %s", user.username, DIRECTORY_OFF_REASON)
    return True


def still_valid(user: User) -> bool:
    """Whether the current request's session may act for `user`; ends it (with a message) when not."""
    cfg = current_app.config
    moment = now()
    reason = None
    if user.cut_off and user.active:
        reason = DIRECTORY_OFF
        if end_cut_off(user):
            db.session.commit()
    elif session.get(VERSION) != user.session_version or not user.active:
        reason = "Your session has ended. Please sign in again."
    elif moment - session.get(SIGNED_IN_AT, 0) > cfg["SESSION_MAX_HOURS"] * 3600:
        reason = f"Sessions last at most {cfg['SESSION_MAX_HOURS']} hours. Please sign in again."
    elif moment - session.get(SEEN_AT, 0) > cfg["SESSION_IDLE_MINUTES"] * 60:
        reason = f"You were signed out after {cfg['SESSION_IDLE_MINUTES']} minutes without activity."
    if reason:
        session.clear()
        flash(reason, "info")
        return False
    if AUTO_REFRESH not in request.args:
        session[SEEN_AT] = moment
    return True
