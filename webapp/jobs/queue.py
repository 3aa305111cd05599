"""The task queue: Huey, on a SQLite file in the instance folder by default (no server to run), on
Redis when REDIS_URL is set (workers on other machines). Why Huey: docs/jobs.md.

Features declare their tasks with `@task("name")` and, where a task can be cut short by a dying
worker, a `@recovery` function that puts unfinished work back on the queue. Huey's queue is not
a ledger: a message is gone once a worker takes it, so durability comes from the features' own
rows (state per item, a lease per job) and from recovery, which every worker runs when it starts
and the scheduler runs every minute.

Tasks run inside an application context of the app that built the queue.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from flask import Flask, current_app
from huey import Huey, RedisHuey, SqliteHuey, crontab

from ..private_files import private_sqlite_file

log = logging.getLogger(__name__)

_TASKS: dict[str, Callable] = {}
_RECOVERIES: list[Callable[..., int]] = []
# (task name, config key of its interval in minutes or None for every minute, needs Redis, fn)
_PERIODIC: list[tuple[str, str | None, bool, Callable]] = []
RECOVERY_TASK = "jobs.recover"
PROBE_TIMEOUT_SECONDS = 1.0
# How long the queue's own client waits for Redis. redis-py's default, 5 s a call, held a web request
# that enqueued (a validation run) or a film the PACS was sending 5 s per call while Redis stalled (the
# connection open, nothing answering). It must stay well above Huey's blocking read (BRPOP, 1 s) plus
# the network: a read cut short there may lose the message Redis pops a moment later.
QUEUE_TIMEOUT_SECONDS = 3.0
# A worker records in the queue's own storage that it is there: when it starts, then with the jobs it runs
# (at least the recovery sweep, every minute), at most every SEEN_EVERY_SECONDS. Jobs waiting with no
# worker seen for WORKER_SILENT_SECONDS are a warning on /readyz.
WORKER_SEEN = "jobs-worker-seen"
SEEN_EVERY_SECONDS = 30.0
WORKER_SILENT_SECONDS = 180


def task(name: str):
    """Declare `fn` as the job `name`; enqueue it with `enqueue(name, *args)`."""

    def register(fn: Callable) -> Callable:
        _TASKS[name] = fn
        return fn

    return register


def recovery(fn: Callable[..., int]) -> Callable[..., int]:
    """Declare `fn(on_start: bool) -> int`, which re-enqueues work a dead worker left unfinished and
    returns how many jobs; `on_start` is true when a worker is starting (it may replace a dead one)."""
    _RECOVERIES.append(fn)
    return fn


def periodic(name: str, minutes_setting: str | None = None, needs_redis: bool = False):
    """Declare `fn()` as the job `name`, run by every worker's scheduler every N minutes, N the
    config value `minutes_setting` (1 to 59; 0 turns it off), or every minute without one. It must be
    safe to run twice. `needs_redis`: not scheduled on the SQLite queue, where it would have nothing to
    do but put Huey's "Executing ..." lines in the worker's log every minute."""

    def register(fn: Callable) -> Callable:
        _PERIODIC.append((name, minutes_setting, needs_redis, fn))
        return fn

    return register


def build_huey(config) -> Huey:
    name = config["JOBS_QUEUE_NAME"]
    if config.get("REDIS_URL"):
        seconds = QUEUE_TIMEOUT_SECONDS
        pool = redis.ConnectionPool.from_url(
            config["REDIS_URL"], socket_timeout=seconds, socket_connect_timeout=seconds
        )  # Huey takes timeouts only with a pool of our own (with its url= they are "over-determined")
        return RedisHuey(name, connection_pool=pool)
    path = Path(config["INSTANCE_DIR"]) / "jobs.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    private_sqlite_file(str(path))  # like the app's database: 0600 whatever the umask
    return SqliteHuey(name, filename=str(path))


class QueueUnavailable(RuntimeError):
    pass


class JobQueue:
    """The app's queue, built on first use so that creating the app touches no file or server."""

    def __init__(self, app: Flask):
        self.app = app
        self._huey: Huey | None = None
        self._tasks: dict[str, Callable] = {}
        self._lock = threading.Lock()  # gunicorn threads may enqueue the first job at the same moment
        self._probe: redis.Redis | None = None
        self._seen_written: float | None = None  # time.monotonic() of the last record

    @property
    def huey(self) -> Huey:
        with self._lock:
            if self._huey is None:
                huey = build_huey(self.app.config)
                for name, fn in _TASKS.items():
                    self._tasks[name] = huey.task(name=name)(self._in_app_context(fn))
                huey.periodic_task(crontab(minute="*"), name=RECOVERY_TASK)(self._in_app_context(run_recoveries))
                for name, setting, needs_redis, fn in _PERIODIC:
                    minutes = int(self.app.config[setting]) if setting else 1
                    if minutes > 0 and (self.app.config.get("REDIS_URL") or not needs_redis):
                        every = crontab(minute=f"*/{minutes}")
                        huey.periodic_task(every, name=name)(self._in_app_context(fn))
                self._huey = huey
        return self._huey

    def _in_app_context(self, fn: Callable) -> Callable:
        app = self.app

        def run(*args):
            self.worker_alive()
            with app.app_context():
                return fn(*args)

        run.__name__ = fn.__name__
        return run

    def enqueue(self, name: str, *args) -> None:
        self.huey  # noqa: B018  (builds the queue and its task wrappers)
        self._tasks[name](*args)

    def enqueue_in(self, seconds: float, name: str, *args) -> None:
        self.huey  # noqa: B018
        self._tasks[name].schedule(args=args, delay=seconds)

    def check_reachable(self) -> None:
        """Raise QueueUnavailable, with the backend's reason, when the queue cannot be read."""
        try:
            self.huey.pending_count()
        except Exception as exc:  # redis-py and sqlite3 have no common base; each says why in its message
            where = "Redis (REDIS_URL)" if self.app.config.get("REDIS_URL") else "its SQLite file in INSTANCE_DIR"
            raise QueueUnavailable(f"the job queue on {where} cannot be reached: {exc}") from exc

    def probe(self) -> str | None:
        """Why the Redis queue cannot be reached, for /readyz, or None (also with the SQLite queue, a file
        beside the database that the probe's disk check covers). A client of its own with shorter
        timeouts than Huey's (QUEUE_TIMEOUT_SECONDS): a probe must not hang on a Redis that does not answer."""
        client = self.redis_client()
        if client is None:
            return None
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"job queue unreachable: Redis (REDIS_URL): {type(exc).__name__}"
        return None

    def redis_client(self) -> redis.Redis | None:
        """The probe's client (short timeouts) on REDIS_URL, or None without Redis."""
        url = self.app.config.get("REDIS_URL")
        if url and self._probe is None:
            seconds = PROBE_TIMEOUT_SECONDS
            self._probe = redis.Redis.from_url(url, socket_connect_timeout=seconds, socket_timeout=seconds)
        return self._probe if url else None

    def clock(self) -> float:
        """Now, in seconds since the epoch, by the clock of the queue's storage: Redis's (TIME) on Redis,
        whose workers and replicas run on other machines, each with its own clock; this machine's for
        the SQLite queue, a file on it. Until 5 December the worker stamped its heartbeat by its clock
        and each replica judged it by its own: one 5 minutes behind was "last seen 5 minutes ago"."""
        client = self.redis_client()
        if client is None:
            return time.time()
        seconds, microseconds = client.time()
        return seconds + microseconds / 1e6

    def worker_alive(self) -> None:
        """Record that a worker takes this queue's jobs (at most every SEEN_EVERY_SECONDS); never fails a job."""
        moment = time.monotonic()
        if self._seen_written is not None and moment - self._seen_written < SEEN_EVERY_SECONDS:
            return
        self._seen_written = moment
        with contextlib.suppress(redis.RedisError, sqlite3.Error, OSError):
            self.huey.put(WORKER_SEEN, self.clock())

    def silent_worker(self) -> str | None:
        """For /readyz: jobs wait and no worker has been seen for WORKER_SILENT_SECONDS, or None. Until
        5 December a worker that never started, or had died, left validation runs and the PACS's films
        waiting with every replica ready and silent."""
        try:
            waiting = self.pending()
            if not waiting:
                return None
            seen = self.huey.get(WORKER_SEEN, peek=True)
            silent = None if seen is None else self.clock() - seen
        except (redis.RedisError, sqlite3.Error, OSError):
            return None  # the probe, or the instance folder's check, says why
        if silent is not None and silent < WORKER_SILENT_SECONDS:
            return None
        last = "never seen on this queue" if silent is None else f"last seen {int(silent) // 60} minutes ago"
        return (
            f"no job worker: {waiting} job(s) wait in the queue and a worker was {last} (validation runs and "
            "films from the PACS wait for one: start `flask --app wsgi jobs worker`)"
        )

    def pending(self) -> int:
        return self.huey.pending_count()

    def pending_work(self) -> int:
        """Jobs waiting other than the periodic ones, for the recovery sweep's "are the queued jobs'
        messages still on the queue?". The scheduler queues the sweep together with the other periodic
        tasks due that minute, so counting those told every sweep on Redis (settings_agreement, every
        minute) and every 15th on SQLite (directory_recheck) that messages waited: a run or film whose
        message was lost (queued while Redis was down, or Redis restarted) then stayed queued until a
        worker restarted."""
        periodic = {RECOVERY_TASK, *(name for name, *_ in _PERIODIC)}
        return sum(1 for job in self.huey.pending() if job.name not in periodic)

    def scheduled(self) -> int:
        return self.huey.scheduled_count()


def run_recoveries(on_start: bool = False) -> int:
    """Re-enqueue what dead workers left unfinished (inside an app context); returns the jobs re-enqueued."""
    count = sum(fn(on_start=on_start) for fn in _RECOVERIES)
    if count:
        log.info("recovery: %d unfinished job(s) put back on the queue", count)
    return count


def init_app(app: Flask) -> None:
    app.extensions["jobs"] = JobQueue(app)


def jobs() -> JobQueue:
    return current_app.extensions["jobs"]


def enqueue(name: str, *args) -> None:
    jobs().enqueue(name, *args)


def enqueue_in(seconds: float, name: str, *args) -> None:
    jobs().enqueue_in(seconds, name, *args)
