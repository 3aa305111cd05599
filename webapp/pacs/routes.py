"""The worklist and the outbox pages."""

from . import bp  # noqa: F401
