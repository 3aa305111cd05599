"""Settings, read from the environment once at start-up.

Production is the default: a deployment must opt *out* of safety, never in.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .env import (
    HOURS_A_YEAR,
    MINUTES_A_YEAR,
    SECONDS_A_DAY,
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_str,
    env_zone,
)
from .inference.image import DEFAULT_DECODE_MEMORY_MB

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_INSTANCE_DIR = PROJECT_DIR / "instance"
DEFAULT_MODEL_PATH = PACKAGE_DIR / "weights" / "cxr_pneumonia.keras"
SECRET_KEY_FILE = "secret_key"

# Keys people copy from tutorials; starting with one of them is as bad as no key.
INSECURE_SECRET_KEYS = frozenset({"", "dev", "changeme", "change-me", "secret", "default"})
# `audit prune --days` of 10**8 ended in an OverflowError traceback: bounded like the periods (env.py).
MAX_RETENTION_DAYS = 36500

# Session cookies are signed with the key: a short one can be brute-forced offline from a single cookie.
MIN_SECRET_KEY_LENGTH = 32


def _instance_dir() -> Path:
    # Flask needs an absolute instance path; a relative one is taken from where the process starts.
    value = env_str("INSTANCE_DIR", "")
    return Path(value).resolve() if value else DEFAULT_INSTANCE_DIR


def _database_url(instance_dir: Path) -> str:
    url = env_str("DATABASE_URL", f"sqlite:///{instance_dir / 'cxr.sqlite'}")
    # psycopg 3 is the driver we ship; accept the common bare postgres:// spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if not re.match(r"(sqlite(\+pysqlite)?|postgresql\+psycopg)://", url):
        # Never the URL itself in the message: it may hold the database password.
        raise ConfigError("DATABASE_URL must be a sqlite:/// or postgresql:// URL (see docs/deployment.md)")
    return _readable_database_url(url)


def _readable_database_url(url: str) -> str:
    """`url` when SQLAlchemy reads it as written. A password with an @ not percent-encoded (p@ss:w/rd)
    stopped every process with SQLAlchemy's traceback, "invalid literal for int() with base 10: 'w'"
    (a piece of the password), and the entrypoint waited a minute for a database that could never
    answer; without a : after it, the rest of the password was read as the host, which the driver
    then printed ("failed to resolve host 'ss@db'"). A URL has at most one @ before its path, the one
    ending the user and password: a SQLite path (INSTANCE_DIR) may hold any number."""
    authority = url.split("://", 1)[1].split("/", 1)[0]
    try:
        make_url(url)
        readable = authority.count("@") <= 1
    except (ArgumentError, ValueError):
        readable = False
    if not readable:
        raise ConfigError(
            "DATABASE_URL cannot be read as user, password, host, port and database: percent-encode "
            "@ : / % # ? in the user name and password (as %40 %3A %2F %25 %23 %3F; see docs/deployment.md)"
        )
    return url


def _redis_url() -> str | None:
    url = env_str("REDIS_URL", "")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL (see docs/deployment.md)")
    return url or None


AE_TITLE_RULE = "an AE title is 1 to 16 printable ASCII characters without a backslash"


def ae_title_ok(title: str) -> bool:
    """DICOM's rule (PS3.5 AE value representation) as pynetdicom enforces it, the one home for it:
    the settings (here) and DICOM_RESULTS_DESTINATION (pacs/sender.py) are checked by it, so that
    neither the DICOM node stops, nor every result fails, on pynetdicom's ValueError."""
    return 0 < len(title.strip()) <= 16 and "\\" not in title and all(" " <= ch <= "~" for ch in title)


def _ae_title(name: str, title: str) -> str:
    if not ae_title_ok(title):
        raise ConfigError(f"{name}: {AE_TITLE_RULE}, not {title!r}")
    return title


class Config:
    ENV_NAME = "production"
    INSTANCE_DIR = _instance_dir()
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = _database_url(INSTANCE_DIR)
    # hide_parameters: a database error's log line names the statement, never the values (a
    # clinician's comment, a name typed at sign-in).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "hide_parameters": True}
    MODEL_PATH = Path(env_str("MODEL_PATH", str(DEFAULT_MODEL_PATH)))
    # Films screened at the same moment in one process share a forward pass (inference/batching.py):
    # at most this many, collected for up to this long (0: only films already waiting; docs/serving.md).
    INFERENCE_BATCH_MAX = env_int("INFERENCE_BATCH_MAX", 8, minimum=1)
    # At most a second, which every upload would wait: far past any use, and a huge value (1e300) made
    # the batch thread's wait overflow, so it died at the first upload and every upload then hung.
    INFERENCE_BATCH_WINDOW_MS = env_float("INFERENCE_BATCH_WINDOW_MS", 0.0, maximum=1000.0)
    MAX_UPLOAD_MB = env_int("MAX_UPLOAD_MB", 50, minimum=1)
    MAX_CONTENT_LENGTH = MAX_UPLOAD_MB * 1024 * 1024
    MAX_FILES_PER_UPLOAD = env_int("MAX_FILES_PER_UPLOAD", 20, minimum=1)
    HISTORY_PAGE_SIZE = 25
    # Long side of the header-free copy kept for review (the film viewer's full resolution).
    REVIEW_IMAGE_SIZE = env_int("REVIEW_IMAGE_SIZE", 1024, minimum=1)
    # Make a big film's full-size copy after answering the upload (webapp/screening/review_copy.py).
    REVIEW_COPY_IN_BACKGROUND = env_bool("REVIEW_COPY_IN_BACKGROUND", True)

    # Sign-in throttling: after this many failures (per account and address pair, and per address)
    # each further try must wait twice as long as the last, up to LOGIN_MAX_DELAY_SECONDS. Counters
    # are forgotten after LOGIN_WINDOW_MINUTES without a failure.
    LOGIN_WINDOW_MINUTES = env_int("LOGIN_WINDOW_MINUTES", 15, minimum=1, maximum=MINUTES_A_YEAR)
    LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5, minimum=1)
    LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1)
    LOGIN_MAX_DELAY_SECONDS = env_int("LOGIN_MAX_DELAY_SECONDS", 300, minimum=1, maximum=SECONDS_A_DAY)

    # Sessions end after this long without a request, and this long after sign-in in any case.
    SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 30, minimum=1, maximum=MINUTES_A_YEAR)
    SESSION_MAX_HOURS = env_int("SESSION_MAX_HOURS", 12, minimum=1, maximum=HOURS_A_YEAR)
    PERMANENT_SESSION_LIFETIME = timedelta(hours=SESSION_MAX_HOURS)

    # Directory sign-in (LDAP / Active Directory); off while LDAP_URL is empty. See docs/sign-in.md.
    LDAP_URL = os.environ.get("LDAP_URL", "")
    LDAP_STARTTLS = env_bool("LDAP_STARTTLS", False)
    LDAP_BIND_DN = os.environ.get("LDAP_BIND_DN", "")
    LDAP_BIND_PASSWORD = os.environ.get("LDAP_BIND_PASSWORD", "")
    LDAP_USER_BASE = os.environ.get("LDAP_USER_BASE", "")
    LDAP_USER_FILTER = env_str("LDAP_USER_FILTER", "(uid={username})")
    LDAP_ADMIN_GROUP_DN = os.environ.get("LDAP_ADMIN_GROUP_DN", "")
    LDAP_CLINICIAN_GROUP_DN = os.environ.get("LDAP_CLINICIAN_GROUP_DN", "")
    LDAP_CA_FILE = os.environ.get("LDAP_CA_FILE", "")  # PEM of the CA that signed the directory's certificate
    LDAP_TIMEOUT_SECONDS = env_int("LDAP_TIMEOUT_SECONDS", 5, minimum=1, maximum=300)
    # How often the job worker asks the directory about every directory account (0: never): a leaver
    # loses sessions and tokens within this many minutes, not at a next sign-in that never comes.
    DIRECTORY_RECHECK_MINUTES = env_int("DIRECTORY_RECHECK_MINUTES", 15)

    # API tokens: life of a new token (`users token --days` overrides it per token).
    API_TOKEN_DAYS = env_int("API_TOKEN_DAYS", 90, minimum=1, maximum=3650)
    # Rate limits in Flask-Limiter notation, per token and per user: far above what a person
    # clicking or a well-behaved script sends, low enough to stop a runaway loop in seconds.
    RATE_LIMITS_ENABLED = env_bool("RATE_LIMITS_ENABLED", True)
    API_RATE_LIMIT = env_str("API_RATE_LIMIT", "20/second;600/minute")
    UPLOAD_RATE_LIMIT = env_str("UPLOAD_RATE_LIMIT", "10/second;300/minute")
    # Sign-in form posts per client address: each refused one is an audit row, so this bounds what a
    # flood of attempts can add to the permanent trail (docs/security.md).
    SIGN_IN_RATE_LIMIT = env_str("SIGN_IN_RATE_LIMIT", "30/minute")
    # Memory one decode may hold at its peak (each decoder's measured cost), checked from the header.
    DECODE_MEMORY_MB = env_int("DECODE_MEMORY_MB", DEFAULT_DECODE_MEMORY_MB, minimum=1)
    # File names often carry a patient's name or MRN: stored only when a site opts in.
    STORE_ORIGINAL_FILENAMES = env_bool("STORE_ORIGINAL_FILENAMES", False)
    # Audit events older than this are deleted by `flask audit prune` (7 years by default).
    AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 2555, minimum=1, maximum=MAX_RETENTION_DAYS)
    # Predictions (films, verdicts, readings, DICOM receipts) older than this are deleted by `flask
    # predictions prune`; unset: kept for ever (0 stands for unset, and cannot be set: it is not a period).
    PREDICTION_RETENTION_DAYS = env_int("PREDICTION_RETENTION_DAYS", 0, minimum=1, maximum=MAX_RETENTION_DAYS) or None

    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SESSION_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None  # a sign-in page left open over a shift must still work
    TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)
    # Strict-Transport-Security is opt-in: on a plain-http intranet it would lock browsers out.
    # Set it (e.g. 31536000) only once the site is served over HTTPS for good.
    HSTS_SECONDS = env_int("HSTS_SECONDS", 0)

    # Redis, when set, holds the rate-limit counters (shared by every worker and replica; per process in
    # memory otherwise) and the background jobs (docs/jobs.md; Huey on SQLite in the instance folder otherwise).
    REDIS_URL = _redis_url()
    JOBS_QUEUE_NAME = env_str("JOBS_QUEUE_NAME", "cxr-jobs")
    # A worker renews its hold on a job at least this often; one silent for longer is taken to be dead.
    JOBS_LEASE_SECONDS = env_int("JOBS_LEASE_SECONDS", 20, minimum=1, maximum=SECONDS_A_DAY)
    # The queue worker yields the CPU to the web workers: OS priority and TensorFlow threads.
    JOBS_WORKER_NICE = env_int("JOBS_WORKER_NICE", 10, maximum=19)
    # At least 1: TensorFlow reads 0 as "as many as the machine has", the opposite of yielding.
    JOBS_WORKER_TF_THREADS = env_int("JOBS_WORKER_TF_THREADS", 1, minimum=1)

    # Validation runs (docs/validation.md): the largest labelled archive an admin may upload.
    VALIDATION_MAX_FILES = env_int("VALIDATION_MAX_FILES", 5000, minimum=1)
    VALIDATION_MAX_BYTES = env_int("VALIDATION_MAX_BYTES", 2 * 1024**3, minimum=1)

    # The DICOM node (docs/dicom.md): where it listens, whom it accepts, where its results go.
    DICOM_AE_TITLE = _ae_title("DICOM_AE_TITLE", env_str("DICOM_AE_TITLE", "CXRSCREEN"))
    DICOM_PORT = env_int("DICOM_PORT", 11112, minimum=1, maximum=65535)
    # Empty is the default too: an empty bind address would be every interface, not the loopback.
    DICOM_BIND = env_str("DICOM_BIND", "127.0.0.1")
    DICOM_ALLOWED_CALLING_AETS = tuple(
        _ae_title("DICOM_ALLOWED_CALLING_AETS", aet.strip())
        for aet in os.environ.get("DICOM_ALLOWED_CALLING_AETS", "").split(",")
        if aet.strip()
    )
    DICOM_RESULTS_DESTINATION = os.environ.get("DICOM_RESULTS_DESTINATION") or None  # AE@host:port
    # DICOM over TLS (pacs/tls.py): the node's certificate and key (PEM), the CAs whose certificates peers present.
    DICOM_TLS_CERT_FILE = env_str("DICOM_TLS_CERT_FILE", "") or None
    DICOM_TLS_KEY_FILE = env_str("DICOM_TLS_KEY_FILE", "") or None
    DICOM_TLS_CA_FILE = env_str("DICOM_TLS_CA_FILE", "") or None
    # Undelivered results are retried with a doubling wait, up to this long between tries and this many tries.
    DICOM_SEND_MAX_BACKOFF_SECONDS = env_int("DICOM_SEND_MAX_BACKOFF_SECONDS", 300, minimum=1, maximum=SECONDS_A_DAY)
    DICOM_SEND_MAX_ATTEMPTS = env_int("DICOM_SEND_MAX_ATTEMPTS", 60, minimum=1)
    # Long side of the secondary-capture image sent back (the film with its heat map).
    DICOM_CAPTURE_SIZE = env_int("DICOM_CAPTURE_SIZE", 1024, minimum=1)
    # The DICOM node gives way to the web workers (it spools and queues; screening is the queue worker's).
    DICOM_LISTENER_NICE = env_int("DICOM_LISTENER_NICE", 10, maximum=19)
    # The clinicians' worklist shows the films received from the PACS in the last hours.
    WORKLIST_HOURS = env_int("WORKLIST_HOURS", 24, minimum=1, maximum=HOURS_A_YEAR)
    # The zone (IANA name) the pages show times in and whose days their date filters mean; the API
    # and the exports stay in UTC (webapp/local_time.py, docs/deployment.md).
    DISPLAY_TIMEZONE = env_zone("DISPLAY_TIMEZONE", "UTC")


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    # Plain http on a developer's machine or the quick start: secure cookies would never be sent back.
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "test-secret-key-not-for-production"
    SQLALCHEMY_DATABASE_URI = os.environ.get("TEST_DATABASE_URL", "sqlite://")
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    ARGON2_FAST = True  # tests create many users; full-strength hashing would only slow them
    # In-memory SQLite is one connection: no second thread may write to it. Tests that check the
    # background path turn it on with a database file.
    REVIEW_COPY_IN_BACKGROUND = False


CONFIGS = {"production": Config, "development": DevelopmentConfig, "testing": TestingConfig}


def config_from_env() -> type[Config]:
    name = env_str("APP_ENV", "production")
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"APP_ENV must be one of {sorted(CONFIGS)}, not {name!r}") from None
