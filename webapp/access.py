"""API tokens: the one a request carries, and their lifecycle (issue, revoke one, revoke all
of a user's). Every step is audited, and no secret ever reaches the audit trail (only a
token's id and name).

`actor` is who did it, for the audit trail: by default the signed-in user (or the token's
owner on the API), and the shell's (`cli:NAME`, shell_actor.py) outside a request.
"""

from __future__ import annotations

from flask import g, has_request_context, request
from flask_login import current_user

from .extensions import db
from .models import ApiToken, User, changed_if, record_audit, utcnow
from .refusal import Refusal
from .shell_actor import shell_actor


def bearer_secret() -> str:
    """The secret the request's `Authorization: Bearer` header carries; empty when none."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def request_token() -> ApiToken | None:
    """The live API token the request carries (Authorization: Bearer), looked up once per
    request: the rate limiter asks before the view runs."""
    if "api_token" not in g:
        secret = bearer_secret()
        g.api_token = ApiToken.authenticate(secret) if secret else None
        if g.api_token is not None:
            g.api_user = g.api_token.user
    return g.api_token


class TokenRefused(Refusal):
    """A token that would be refused at every use, so it is not issued."""


def _default_actor() -> str:
    if has_request_context():
        user = g.get("api_user") or (current_user if current_user.is_authenticated else None)
        if user is not None:
            return user.username
    return shell_actor()


def issue_token(
    user: User, name: str = "", days: int = 90, actor: str | None = None, form_once: str | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user`: the row and the secret. The caller commits and shows the secret once.
    Raises TokenRefused for an account whose tokens would not be honoured, and IntegrityError when
    `form_once` (the admin page form's one-time value) already issued one."""
    if not user.may_use_tokens:
        # A secret shown once and refused at every use: the administrator would find out from a script.
        if not user.active:
            why = "is deactivated: activate the account first"
        elif user.cut_off:
            why = (
                "is an account from the staff directory, and directory sign-in is switched off: make it a local "
                f"account first (flask --app wsgi users make-local {user.username})"
            )
        else:
            # Not only "in neither group": gone from the directory, disabled there, or the name now another
            # entry's end it too, and for that one no sign-in brings it back (docs/sign-in.md: rename it).
            why = (
                "has no access from the directory since its last check (gone from it, in neither group, disabled "
                "there, or its name now another directory entry's: the audit trail's access_ended row says which; "
                "docs/sign-in.md)"
            )
        raise TokenRefused("token_refused", f"No token issued: {user.username} {why}.", 409)
    token, secret = ApiToken.create(user, name.strip()[:64], days, form_once)
    db.session.flush()  # the id names the token in the audit trail and on the admin page
    record_audit(
        actor or _default_actor(),
        "token_issued",
        user.username,
        f"token {token.id} {token.name!r}, expires {token.expires_at:%Y-%m-%d}",
    )
    return token, secret


def revoke_token(token: ApiToken, actor: str | None = None, reason: str = "") -> bool:
    """Revoke one token; False when it was already revoked (`token` then shows when)."""
    if token.revoked_at is not None:
        return False
    # Conditional, so of two revocations at once (a double-click, two administrators) only the one that
    # revoked it says so and writes the audit row: the other waits for it, then changes nothing.
    if not changed_if(token, ApiToken.revoked_at.is_(None), revoked_at=utcnow()):
        db.session.refresh(token, ["revoked_at"])
        return False
    details = f"token {token.id} {token.name!r}" + (f"; {reason}" if reason else "")
    record_audit(actor or _default_actor(), "token_revoked", token.user.username, details)
    return True


def revoke_tokens(user: User, actor: str | None = None, reason: str = "") -> int:
    """Revoke every token of `user` still standing (a password reset calls this); returns how many."""
    return sum(revoke_token(token, actor, reason) for token in user.tokens if token.state == "active")
