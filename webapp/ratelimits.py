"""Rate limits per API token and per user (Flask-Limiter), for API calls and uploads, and per
client address for sign-in form posts.

Counters live in Redis when REDIS_URL is set (shared by every worker and replica), in each
process's memory otherwise. The limits are read from the config at each request, in
Flask-Limiter notation (API_RATE_LIMIT, UPLOAD_RATE_LIMIT, SIGN_IN_RATE_LIMIT);
RATE_LIMITS_ENABLED=false turns the whole mechanism off (benchmarks, bulk jobs the site runs itself).
"""

from __future__ import annotations

import contextlib
import functools
import re
import time

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_login import current_user
from limits import parse_many
from sqlalchemy.exc import SQLAlchemyError

from .access import request_token
from .env import ConfigError
from .extensions import db
from .jobs.queue import PROBE_TIMEOUT_SECONDS
from .limit_storage import SCHEME as MEMORY_SCHEME
from .logs import install_json_logging

LIMIT_SETTINGS = ("API_RATE_LIMIT", "UPLOAD_RATE_LIMIT", "SIGN_IN_RATE_LIMIT")


def scoped(key: str) -> str:
    """A counter's key within this deployment. Deployments may share one Redis, kept apart by
    JOBS_QUEUE_NAME (docs/jobs.md); their token and user ids overlap, so until 5 December a script on
    one (a test site) used up the limits of the other's token and user of the same id."""
    return f"{current_app.config['JOBS_QUEUE_NAME']}/{key}"


def client_address() -> str:
    return scoped(f"addr:{request.remote_addr or 'unknown'}")


def _read_from_database(key_func):
    """A key read from the database (the token, the signed-in user) falls back to the address while
    the database cannot answer: the view then answers that request 503 with one log line
    (errors/handlers.py). Raised inside Flask-Limiter, the failure was taken for its storage's:
    "Rate limit storage unreachable", a 60-line traceback and "recovered", on every request."""

    @functools.wraps(key_func)
    def key() -> str:
        try:
            return key_func()
        except SQLAlchemyError:
            with contextlib.suppress(SQLAlchemyError):
                db.session.rollback()
            return client_address()

    return key


@_read_from_database
def token_key() -> str:
    """One bucket per API token; requests without a valid token share their address's bucket."""
    token = request_token()
    return scoped(f"token:{token.id}") if token else client_address()


@_read_from_database
def user_key() -> str:
    """One bucket per user, whichever token or browser session the request came with."""
    token = request_token() if request.blueprint == "api" else None
    if token is not None:
        return scoped(f"user:{token.user_id}")
    if current_user.is_authenticated:
        return scoped(f"user:{current_user.id}")
    return client_address()


def api_limit() -> str:
    return current_app.config["API_RATE_LIMIT"]


def upload_limit() -> str:
    return current_app.config["UPLOAD_RATE_LIMIT"]


def sign_in_limit() -> str:
    return current_app.config["SIGN_IN_RATE_LIMIT"]


limiter = Limiter(key_func=client_address, key_prefix="cxr")

# Past the throttle's progressive delays, every refused sign-in still writes an audit row: this
# bounds how fast one address can add them (300 posts in 1.5 s wrote 300 rows before).
sign_in_per_address = limiter.limit(sign_in_limit, key_func=client_address, methods=["POST"])

# Uploads are counted in one bucket per user for the page and the API together, and per token.
upload_per_user = limiter.shared_limit(
    upload_limit, scope="upload", key_func=user_key, methods=["POST"], override_defaults=False
)
upload_per_token = limiter.shared_limit(
    upload_limit, scope="upload-token", key_func=token_key, methods=["POST"], override_defaults=False
)


def limit_api_blueprint(bp) -> None:
    """Every API call counts against its token's and its user's API_RATE_LIMIT, one bucket for
    all endpoints (a script cannot multiply its allowance by alternating endpoints)."""
    limiter.shared_limit(api_limit, scope="api", key_func=token_key)(bp)
    limiter.shared_limit(api_limit, scope="api-user", key_func=user_key)(bp)


def check_limits(config) -> None:
    """Refuse a limit Flask-Limiter cannot read: it would skip it without a word (errors are
    swallowed so a Redis outage cannot take the app down), leaving the app unlimited."""
    for name in LIMIT_SETTINGS:
        try:
            parse_many(config[name])
        except ValueError:
            raise ConfigError(
                f"{name} must be limits like 20/second;600/minute (Flask-Limiter notation), not {config[name]!r}"
            ) from None


def storage_uri(redis_url: str | None) -> str:
    """REDIS_URL as Flask-Limiter's storage: the limits library calls a Redis socket redis+unix://,
    where redis-py (the job queue, /readyz) and docs/deployment.md say unix://; given as such, it
    stopped the app at start-up with limits' "unknown storage scheme" traceback. Without Redis, the
    process's memory without a thread per request (limit_storage.py)."""
    if redis_url and redis_url.startswith("unix://"):
        return "redis+" + redis_url
    return redis_url or f"{MEMORY_SCHEME}://"


def init_app(app: Flask) -> None:
    if app.config["RATE_LIMITS_ENABLED"]:
        check_limits(app.config)
    app.config["RATELIMIT_ENABLED"] = app.config["RATE_LIMITS_ENABLED"]
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri(app.config["REDIS_URL"])
    if app.config["REDIS_URL"]:
        # A count waits for Redis as long as the /readyz probe does, then counts in memory: redis-py's
        # default, 5 s per call, made every request while Redis stalled (the connection open, nothing
        # answering) wait 5 s per limit; an API upload counts four and answered after 14 s.
        seconds = PROBE_TIMEOUT_SECONDS
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": seconds, "socket_connect_timeout": seconds}
    # A Redis outage must not take the app down: counting falls back to memory until it is back.
    app.config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] = True
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True
    limiter.init_app(app)
    # Flask-Limiter says when it falls back and when Redis is back, but only to a NullHandler: into
    # the app's log with them, or an administrator never learns the limits are per process for a while.
    install_json_logging("flask-limiter")


def redis_counting_problem() -> str | None:
    """For /readyz, with REDIS_URL set and Redis answering its PING: why a count cannot be kept there,
    or None. The counters are Lua scripts (EVALSHA): a Redis hardened with `rename-command EVALSHA ""`
    or an ACL user without @scripting, or one full (maxmemory, noeviction), refused every count while
    it answered the PING that Flask-Limiter takes for "recovered", so each process counted alone,
    the log said "storage unreachable" then "recovered" about every second, and /readyz said ready."""
    if not (current_app.config["RATE_LIMITS_ENABLED"] and current_app.config["REDIS_URL"]):
        return None
    try:
        limiter.storage.incr(scoped("readyz-probe"), 60)
    except Exception as exc:  # redis-py's ResponseError (unknown command, NOPERM, OOM), or a timeout
        # Without what Redis adds after the reason (", with args beginning with: ...", " script: ...": a
        # script's hash and our key names).
        reason = re.split(r",? (?:with args|script:)", (str(exc).strip().splitlines() or [""])[0], maxsplit=1)[0]
        return (
            f"rate limits counted per process: Redis (REDIS_URL) refuses the counters: {type(exc).__name__}: "
            f"{reason} (they need EVALSHA, SCRIPT LOAD and INCR for this user, and room to write)"
        )
    return None


def retry_after_seconds() -> int:
    """Seconds until the limit this request broke lets requests through again."""
    breached = limiter.current_limit
    if breached is None:
        return 1
    return max(1, int(breached.reset_at - time.time() + 0.999))
