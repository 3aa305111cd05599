"""Settings that every instance sharing one Redis must agree on, and a warning while they do not.

Replicas and the job worker of one site share a Redis (REDIS_URL). A setting that differs between
them left each one working and the site silently divided:
- SECRET_KEY: a session signed on one replica is not valid on another (a user is sent back to sign in
  on every other request), and the per-account sign-in throttle keys its counters with it, so each
  replica allowed an account its own 5 failures;
- the model version: the same film got another verdict, at another threshold (a site operating point
  belongs to one model version), depending on which replica or worker screened it;
- the rate limits: each replica held the shared counters to its own numbers.

So each process writes what it runs with into Redis, one hash per setting (value -> when last seen):
a replica on every /readyz, the job worker when it starts and every minute. Two values seen within
WINDOW_SECONDS are named in /readyz's warnings and in the worker's log. SECRET_KEY is written as a
keyed hash of a constant (pseudonyms.py), never the key. A value everyone stopped using (a key
rotated on every instance) is forgotten WINDOW_SECONDS later.

The DICOM node (`flask dicom listen`) takes no part, on purpose: it screens nothing (no model), serves
no session and counts no sign-in, and the keyed hashes of UIDs it writes (pacs/intake.py: a film sent
again is matched to its receipt) are computed and compared by the node alone; no replica or worker
computes one. A key other than the replicas' changes nothing there; only the node's own key changing
matters (docs/deployment.md, "Changing SECRET_KEY"). tests/test_instance_agreement.py checks that the
UID hash stays the node's alone: a use elsewhere would need the node in this check.
"""

from __future__ import annotations

import logging

import redis
from flask import current_app

from ..inference.runtime import ModelUnavailable, analyzer_for
from ..pseudonyms import keyed_hash
from ..ratelimits import LIMIT_SETTINGS
from .queue import jobs, periodic

log = logging.getLogger(__name__)

WINDOW_SECONDS = 300
SECRET = "SECRET_KEY"


def worker_settings(model_version: str | None) -> dict[str, str]:
    """What the job worker must share with the replicas: it screens the PACS's films and validation runs.
    No model version while the model cannot be loaded (/readyz then says so)."""
    settings = {SECRET: keyed_hash("settings agreement", "settings-agreement")}
    if model_version:
        settings["model version"] = model_version
    return settings


def replica_settings(model_version: str | None) -> dict[str, str]:
    config = current_app.config
    settings = worker_settings(model_version)
    settings["RATE_LIMITS_ENABLED"] = str(config["RATE_LIMITS_ENABLED"]).lower()
    settings.update({name: config[name] for name in LIMIT_SETTINGS})
    return settings


def disagreement(client: redis.Redis, settings: dict[str, str], now: float | None = None) -> str | None:
    """Record `settings` as this process's, and say which of them another instance ran otherwise within
    WINDOW_SECONDS; None when all agree or Redis does not answer (the queue probe says so).
    Times are Redis's (jobs().clock()): stamped by each instance's own clock, a replica whose clock ran
    10 minutes behind was "not seen" by the others, and its other SECRET_KEY never named."""
    prefix = f"{current_app.config['JOBS_QUEUE_NAME']}:settings:"
    try:
        now = jobs().clock() if now is None else now
        pipe = client.pipeline(transaction=False)
        for name, value in settings.items():
            pipe.hset(prefix + name, value, now)
            pipe.hgetall(prefix + name)
        seen = pipe.execute()[1::2]
        differing, stale = [], client.pipeline(transaction=False)
        for name, values in zip(settings, seen, strict=True):
            recent = sorted(value.decode() for value, at in values.items() if float(at) >= now - WINDOW_SECONDS)
            if old := [value for value, at in values.items() if float(at) < now - WINDOW_SECONDS]:
                stale.hdel(prefix + name, *old)
            if len(recent) > 1:
                shown = f"{len(recent)} different keys" if name == SECRET else ", ".join(repr(v) for v in recent)
                differing.append(f"{name} ({shown})")
        stale.execute()
    except redis.RedisError:
        return None
    if not differing:
        return None
    return (
        f"settings differ between the instances sharing this Redis (REDIS_URL) in the last "
        f"{WINDOW_SECONDS // 60} minutes: {'; '.join(differing)}; give every replica and the job worker "
        "the same values and restart the odd ones"
    )


@periodic("jobs.settings_agreement", needs_redis=True)
def check_worker_settings() -> None:
    """The job worker's part, at its start and every minute: record its settings, log any difference.
    Only with Redis: a worker on the SQLite queue shares it with no other instance."""
    client = jobs().redis_client()
    if client is None:
        return
    try:
        model_version = analyzer_for(current_app.config).model_version
    except ModelUnavailable:
        model_version = None
    if found := disagreement(client, worker_settings(model_version)):
        log.warning("jobs worker: %s", found)
