"""Probes for orchestrators and load balancers; outside the sign-in wall, JSON only.

/readyz is polled every few seconds by every balancer and by the container's HEALTHCHECK, so each
check is one cheap call: the model already loaded, `SELECT 1`, the schema revision and (PostgreSQL)
whether the server takes writes, a statvfs,
access(2) on the database file and the instance folder, a Redis PING, the queue's length and when a
worker was last seen, two indexed queries for work stopped mid-job, and one pipeline recording this
replica's settings (jobs/agreement.py).
"""

import os
import shutil
from datetime import timedelta
from pathlib import Path

from flask import current_app, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..inference.runtime import ModelUnavailable, analyzer_for
from ..jobs.agreement import disagreement, replica_settings
from ..jobs.leases import lapsed
from ..jobs.queue import WORKER_SILENT_SECONDS, jobs
from ..models import RECEIPT_SCREENING, RUN_RUNNING, DicomReceipt, ValidationRun, utcnow
from ..ratelimits import redis_counting_problem
from ..schema import schema_behind
from . import bp

# Below this much free space in INSTANCE_DIR (the SQLite database and job queue, validation archives)
# writes there start failing within a few uploads (on SQLite each then answers 503): time to send
# the traffic elsewhere and to tell the operator why.
MIN_FREE_MB = 256


@bp.route("/healthz")
def healthz():
    return jsonify(status="ok")


def _disk_problem() -> str | None:
    folder = current_app.config["INSTANCE_DIR"]
    try:
        free_mb = shutil.disk_usage(folder).free // (1024 * 1024)
    except OSError as exc:
        # The folder gone (a volume unmounted, renamed, a stale network share): until 5 December the
        # probe itself answered 500 with a stack trace, the one place that should say what is wrong.
        return f"instance folder (INSTANCE_DIR) unusable: {folder}: {exc.strerror}"
    if free_mb < MIN_FREE_MB:
        return f"disk nearly full: {free_mb} MB free in the instance folder (INSTANCE_DIR), under {MIN_FREE_MB} MB"
    return None


def _write_problem() -> str | None:
    """A SQLite database on a read-only mount, or not this user's to write, fails every request with
    503 (reads too: sign-in, a token's last use and the audit trail write), yet answered ready."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    if os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)):
        return None
    return f"database not writable: {path} or its folder is read-only or not this user's to write"


def _standby_problem() -> str | None:
    """A PostgreSQL server that takes no writes: a standby (after a failover, DATABASE_URL still naming
    the old primary) or a database a DBA set `default_transaction_read_only`. Every upload, and every
    page that records a view, failed while this said ready (until 5 December with a 500)."""
    if db.engine.url.get_backend_name() != "postgresql":
        return None
    if db.session.execute(text("SHOW transaction_read_only")).scalar() != "on":
        return None
    return (
        "database not writable: the PostgreSQL server takes no writes (a standby, or "
        "default_transaction_read_only): point DATABASE_URL at the primary"
    )


def _instance_warning() -> str | None:
    # Not a reason to leave the pool on PostgreSQL: screening writes nothing there (validation
    # archives, the SQLite job queue and the PACS's films do).
    if os.access(current_app.config["INSTANCE_DIR"], os.W_OK):
        return None
    return "instance folder (INSTANCE_DIR) not writable: validation archives and films from the PACS cannot be kept"


def _disagreement(model_version: str | None) -> str | None:
    """Settings this replica runs with that another instance on the same Redis runs otherwise (agreement.py)."""
    client = jobs().redis_client()
    return disagreement(client, replica_settings(model_version)) if client else None


def _stalled_work() -> str | None:
    """Work whose job died with its worker (SIGKILL, out of memory) and that no worker has taken over:
    its lease lapsed minutes ago. The queue holds no message for it (the dead job had taken it), so the
    warning about jobs waiting with no worker never came, and the run page showed "running" with its
    count frozen, for as long as nobody looked at the worker."""
    cutoff = utcnow() - timedelta(seconds=WORKER_SILENT_SECONDS)
    runs = db.session.scalars(
        select(ValidationRun.id)
        .where(ValidationRun.status == RUN_RUNNING, lapsed(ValidationRun, cutoff))
        .order_by(ValidationRun.id)
    ).all()
    films = db.session.scalar(
        select(func.count())
        .select_from(DicomReceipt)
        .where(DicomReceipt.state == RECEIPT_SCREENING, DicomReceipt.lease_until < cutoff)
    )
    if not runs and not films:
        return None
    stopped = [
        f"validation run(s) {', '.join(map(str, runs))}" if runs else "",
        f"{films} film(s) from the PACS" if films else "",
    ]
    return (
        f"stalled jobs: {' and '.join(part for part in stopped if part)} stopped mid-job over "
        f"{WORKER_SILENT_SECONDS // 60} minutes ago and no job worker took them over (start `flask --app wsgi "
        "jobs worker`: they carry on where they stopped)"
    )


@bp.route("/readyz")
def readyz():
    problems = []
    model_version = None
    stalled = None
    try:
        model_version = analyzer_for(current_app.config).model_version
    except ModelUnavailable as exc:
        problems.append(str(exc))
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        problems.append(f"database unreachable: {type(exc).__name__}")
    else:
        if schema := schema_behind(db.session):
            problems.append(schema)
        else:
            stalled = _stalled_work()
        if standby := _standby_problem():
            problems.append(standby)
    if disk := _disk_problem():
        problems.append(disk)
    if unwritable := _write_problem():
        problems.append(unwritable)
    # Said, but not a reason to take the replica out: screening needs no queue (only validation runs
    # and the PACS's films do, and they wait in it), and a Redis outage reaches every replica at once,
    # so failing on it would turn a delay of queued jobs into no screening anywhere.
    unreachable = jobs().probe()
    queue = (
        [unreachable]
        if unreachable
        else [jobs().silent_worker(), _disagreement(model_version), redis_counting_problem()]
    )
    warnings = [warning for warning in (*queue, stalled, _instance_warning()) if warning]
    if problems:
        return jsonify(status="unavailable", reasons=problems, warnings=warnings), 503
    return jsonify(status="ready", model_version=model_version, warnings=warnings)
