"""What the job worker, and whoever enqueues, log while the queue cannot be reached or refuses writes.

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
# A Redis that answers but refuses a write: full (maxmemory with noeviction), a read-only replica (after a
# failover, REDIS_URL still naming the old primary), a command its ACL denies. The scheduler logged a
# traceback for each periodic job every minute, and the DICOM node one for each film (until 5 December).
REFUSING = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.NoPermissionError)


def _outage(error: BaseException | None) -> str | None:
    """What the queue's state is, for a log line, or None when `error` is not the queue's state but a fault."""
    if isinstance(error, REFUSING):
        return "the job queue's Redis refuses it: full, a read-only replica, or a command its ACL denies"
    if isinstance(error, UNREACHABLE):
        return "the job queue cannot be reached"
    return None


class QueueOutageFilter(logging.Filter):
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self.last_logged: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        outage = _outage(error)
        if not record.name.startswith("huey.consumer") or outage is None:
            return True
        now = self.clock()
        if self.last_logged is not None and now - self.last_logged < LOGGED_EVERY_SECONDS:
            return False
        self.last_logged = now
        reason = str(error).strip().splitlines()
        lasting = "while it does" if isinstance(error, REFUSING) else "until it can"
        record.msg = (
            f"{record.getMessage()}: {type(error).__name__}: {reason[0] if reason else ''} "
            f"({outage}; this is logged once a minute {lasting})"
        )
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def log_not_queued(log: logging.Logger, error: BaseException, message: str, *args) -> None:
    """`message` for a job that could not be enqueued: with the reason in one line while the queue cannot
    be reached (an outage, not a bug), with the traceback otherwise."""
    if outage := _outage(error):
        reason = str(error).strip().splitlines()
        log.error(
            f"{message}: {outage} ({type(error).__name__}: {reason[0] if reason else ''})",
            *args,
        )
    else:
        log.error(message, *args, exc_info=error)
