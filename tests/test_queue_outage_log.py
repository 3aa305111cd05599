"""The job worker's log while its queue cannot be reached: one line a minute naming the error, not
Huey's traceback twice a second (about 7,200 tracebacks an hour while Redis was down)."""

from __future__ import annotations

import logging
import sqlite3
import sys

import redis

from webapp.jobs.outage_log import QueueOutageFilter, log_not_queued


def record(name: str, message: str, error: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, (), exc_info)


def test_a_queue_outage_is_one_line_a_minute_without_the_traceback():
    clock = iter([100.0, 100.5, 130.0, 161.0]).__next__
    outage = QueueOutageFilter(clock=clock)
    lost = redis.exceptions.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
    first = record("huey.consumer.Worker-1", "Error reading from queue", lost)
    assert outage.filter(first)
    assert first.exc_info is None and first.exc_text is None  # no traceback
    assert first.getMessage() == (
        "Error reading from queue: ConnectionError: Error 111 connecting to redis:6379. Connection refused. "
        "(the job queue cannot be reached; this is logged once a minute until it can)"
    )
    assert not outage.filter(record("huey.consumer.Scheduler", "Error reading schedule.", lost))  # 0.5 s later
    assert not outage.filter(record("huey.consumer.Worker-1", "Error reading from queue", lost))  # 30 s later
    assert outage.filter(record("huey.consumer.Worker-1", "Error reading from queue", lost))  # 61 s later


def test_a_full_disk_under_the_sqlite_queue_is_one_line_a_minute():
    """Reproduced with INSTANCE_DIR on a full tmpfs: the worker logged "Error reading from queue" with a
    sqlite3 traceback every second or so (Huey deletes the message it takes: a write)."""
    outage = QueueOutageFilter(clock=iter([0.0, 1.4, 61.0]).__next__)
    full = sqlite3.OperationalError("database or disk is full")
    first = record("huey.consumer.Worker-1", "Error reading from queue", full)
    assert outage.filter(first) and first.exc_info is None
    assert first.getMessage().startswith("Error reading from queue: OperationalError: database or disk is full (")
    assert not outage.filter(record("huey.consumer.Worker-1", "Error reading from queue", full))
    assert outage.filter(record("huey.consumer.Worker-1", "Error reading from queue", full))


def test_other_errors_keep_their_traceback():
    outage = QueueOutageFilter(clock=lambda: 0.0)
    failed = record("huey.consumer.Worker-1", "Unhandled error during execution", ValueError("a bug"))
    assert outage.filter(failed) and failed.exc_info is not None
    elsewhere = record("webapp.jobs.cli", "database", redis.exceptions.ConnectionError("x"))
    assert outage.filter(elsewhere) and elsewhere.exc_info is not None


def test_a_redis_that_refuses_writes_is_one_line_a_minute():
    """Reproduced with a worker on a Redis at maxmemory (noeviction): the scheduler logged "Error enqueueing
    periodic task" with a traceback for each periodic job every minute; a read-only replica (READONLY)
    and an ACL's NOPERM are refused the same way."""
    outage = QueueOutageFilter(clock=iter([0.0, 1.0, 61.0]).__next__)
    full = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    first = record("huey.consumer.Scheduler", "Error enqueueing periodic task jobs.recover: 1.", full)
    assert outage.filter(first) and first.exc_info is None
    assert first.getMessage() == (
        "Error enqueueing periodic task jobs.recover: 1.: OutOfMemoryError: command not allowed when used memory > "
        "'maxmemory'. (the job queue's Redis refuses it: full, a read-only replica, or a command its ACL denies; "
        "this is logged once a minute while it does)"
    )
    replica = redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
    assert not outage.filter(record("huey.consumer.Scheduler", "Error enqueueing periodic task", replica))
    assert outage.filter(record("huey.consumer.Scheduler", "Error enqueueing periodic task", replica))


def test_a_job_a_full_redis_refuses_is_one_line(caplog):
    log = logging.getLogger("webapp.pacs.intake")
    full = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    with caplog.at_level(logging.ERROR, logger="webapp.pacs.intake"):
        log_not_queued(log, full, "dicom: could not queue receipt %d; the PACS is told to send it again", 7)
    (line,) = caplog.records
    assert line.exc_info is None and line.getMessage().startswith(
        "dicom: could not queue receipt 7; the PACS is told to send it again: the job queue's Redis refuses it"
    )
