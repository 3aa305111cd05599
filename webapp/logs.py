"""The app's log format: one JSON object per line on stdout, which container runtimes collect."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from .env import ConfigError, env_str


class JsonFormatter(logging.Formatter):
    """time, level, logger, then either the structured `fields` of the record or its message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def _stdout_handler(logger: logging.Logger) -> _StdoutHandler | None:
    return next((h for h in logger.handlers if isinstance(h, _StdoutHandler)), None)


def _json_handler(logger: logging.Logger) -> _StdoutHandler:
    """The logger's JSON handler on stdout, added the first time (so every install is idempotent)."""
    handler = _stdout_handler(logger)
    if handler is None:
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    return handler


# gunicorn's levels, which it reads from the same LOG_LEVEL (gunicorn.conf.py). Python's logging took
# "fatal", "warn" and "notset" too, which the message did not name and gunicorn refuses.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def install_json_logging(logger_name: str = "webapp") -> None:
    """Send the app's logs (request lines, errors) to stdout as JSON, at LOG_LEVEL; idempotent."""
    name = env_str("LOG_LEVEL", "info").lower()
    if name not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}, not {name!r}")
    logger = logging.getLogger(logger_name)
    _json_handler(logger)
    logger.setLevel(name.upper())


def install_process_logging(*filters: logging.Filter) -> None:
    """For the processes the flask CLI keeps running (the job worker, the DICOM node): the libraries'
    logs (Huey, pynetdicom) as the same JSON lines on stdout, and every line once: a logger with its
    own handler (install_json_logging) no longer also reaches the root's, which wrote each of its
    lines a second time."""
    install_json_logging()
    root = logging.getLogger()
    handler = _json_handler(root)
    for extra in filters:  # e.g. the job worker's (jobs/outage_log.py), for the libraries' lines
        handler.addFilter(extra)
    root.setLevel(logging.INFO)
    # The app's loggers and Flask-Limiter's (install_json_logging) write their own lines: not twice.
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if _stdout_handler(logger) is not None:
            logger.propagate = False
