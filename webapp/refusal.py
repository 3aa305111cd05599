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
