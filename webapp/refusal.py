"""A request refused for a reason the user can act on: a code, a message in words, an HTTP status.

Services raise a subclass named for what was refused; pages flash the message, and the API answers
`{"error": {"code", "message"}}` with the status. No Flask here: services stay testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Refusal(Exception):
    code: str
    message: str
    status: int = 422


# The database is down, unreachable, full or otherwise unusable (the cause goes to the log, not to the
# user): not the request's fault and not a bug (errors/handlers.py answers it for any request; the
# upload service for a file after others of its batch were saved).
DATABASE_UNAVAILABLE = (
    "The database is not available at the moment, so nothing was saved. Please try again in a minute; "
    "if this persists, tell IT (the server's log names the cause)."
)


# A disk (or quota) that filled while a request wrote a file of its own (a validation archive in
# INSTANCE_DIR, a large upload's temporary file).
STORAGE_FULL = (
    "The server's disk is full, so nothing was saved. Please try again later; if this persists, tell IT "
    "(the disk that holds the server's files needs space)."
)


def database_reason(exc: Exception) -> str:
    """The driver's first line of a database error (refused, no such table, disk full): for the log or
    an administrator's shell. Never the URL, which may hold a password, nor the statement's values."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
