"""What the job worker, and whoever enqueues, log while the queue cannot be reached.

Huey's consumer logs a full traceback each time a read of the queue fails, and it tries about twice a
second, so a Redis outage of an hour wrote some 7,200 tracebacks. Those records become one line naming
the error, at most once a minute; everything else passes as it is. A job that cannot be enqueued
(`log_not_queued`) is one line naming the error too: the DICOM node wrote a traceback for every film a
PACS sent during the outage.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import redis

LOGGED_EVERY_SECONDS = 60.0
# The errors of a queue that cannot be reached (server down, name not resolving, network cut), not of a bug;
# on the SQLite queue, a full disk or a lock held past the wait: Huey's reads of the queue write (a taken
# message is deleted), and on a full disk it logged a traceback every second or so (until 5 December).
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    sqlite3.OperationalError,
)


class QueueOutageFilter(logging.Filter):
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self.last_logged: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not record.name.startswith("huey.consumer") or not isinstance(error, UNREACHABLE):
            return True
        now = self.clock()
        if self.last_logged is not None and now - self.last_logged < LOGGED_EVERY_SECONDS:
            return False
        self.last_logged = now
        reason = str(error).strip().splitlines()
        record.msg = (
            f"{record.getMessage()}: {type(error).__name__}: {reason[0] if reason else ''} "
            f"(the job queue cannot be reached; this is logged once a minute until it can)"
        )
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def log_not_queued(log: logging.Logger, error: BaseException, message: str, *args) -> None:
    """`message` for a job that could not be enqueued: with the reason in one line while the queue cannot
    be reached (an outage, not a bug), with the traceback otherwise."""
    if isinstance(error, UNREACHABLE):
        reason = str(error).strip().splitlines()
        log.error(
            f"{message}: the job queue cannot be reached ({type(error).__name__}: {reason[0] if reason else ''})",
            *args,
        )
    else:
        log.error(message, *args, exc_info=error)
