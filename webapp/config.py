"""Settings, read from the environment once at start-up.

Production is the default: a deployment must opt *out* of safety, never in.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_INSTANCE_DIR = PROJECT_DIR / "instance"
DEFAULT_MODEL_PATH = PACKAGE_DIR / "weights" / "cxr_pneumonia.keras"
SECRET_KEY_FILE = "secret_key"

# Keys people copy from tutorials; starting with one of them is as bad as no key.
INSECURE_SECRET_KEYS = frozenset({"", "dev", "changeme", "change-me", "secret", "default"})
# Session cookies are signed with the key: a short one can be brute-forced offline from a single cookie.
MIN_SECRET_KEY_LENGTH = 32


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    # A value that is not a whole number stops the start-up with int()'s own ValueError, naming the value.
    return int(os.environ.get(name, default))


def _database_url(instance_dir: Path) -> str:
    url = os.environ.get("DATABASE_URL", f"sqlite:///{instance_dir / 'cxr.sqlite'}")
    # psycopg 3 is the driver we ship; accept the common bare postgres:// spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Config:
    ENV_NAME = "production"
    INSTANCE_DIR = Path(os.environ.get("INSTANCE_DIR", DEFAULT_INSTANCE_DIR))
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = _database_url(INSTANCE_DIR)
    # hide_parameters: a database error's log line names the statement, never the values (a
    # clinician's comment, a name typed at sign-in).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "hide_parameters": True}
    MODEL_PATH = Path(os.environ.get("MODEL_PATH", DEFAULT_MODEL_PATH))
    # Films screened at the same moment in one process share a forward pass (inference/batching.py):
    # at most this many, collected for up to this long (0: only films already waiting; docs/serving.md).
    INFERENCE_BATCH_MAX = _env_int("INFERENCE_BATCH_MAX", 8)
    INFERENCE_BATCH_WINDOW_MS = float(os.environ.get("INFERENCE_BATCH_WINDOW_MS", "0"))
    MAX_UPLOAD_MB = _env_int("MAX_UPLOAD_MB", 50)
    MAX_CONTENT_LENGTH = MAX_UPLOAD_MB * 1024 * 1024
    MAX_FILES_PER_UPLOAD = _env_int("MAX_FILES_PER_UPLOAD", 20)
    HISTORY_PAGE_SIZE = 25
    # Long side of the de-identified copy kept for review (the film viewer's full resolution).
    REVIEW_IMAGE_SIZE = _env_int("REVIEW_IMAGE_SIZE", 1024)
    # Make a big film's full-size copy after answering the upload (webapp/screening/review_copy.py).
    REVIEW_COPY_IN_BACKGROUND = _env_bool("REVIEW_COPY_IN_BACKGROUND", True)

    # Sign-in throttling: after this many failures (per account and address pair, and per address)
    # each further try must wait twice as long as the last, up to LOGIN_MAX_DELAY_SECONDS. Counters
    # are forgotten after LOGIN_WINDOW_MINUTES without a failure.
    LOGIN_WINDOW_MINUTES = _env_int("LOGIN_WINDOW_MINUTES", 15)
    LOGIN_MAX_FAILURES_PER_ACCOUNT = _env_int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)
    LOGIN_MAX_FAILURES_PER_ADDRESS = _env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 20)
    LOGIN_MAX_DELAY_SECONDS = _env_int("LOGIN_MAX_DELAY_SECONDS", 300)

    # Sessions end after this long without a request, and this long after sign-in in any case.
    SESSION_IDLE_MINUTES = _env_int("SESSION_IDLE_MINUTES", 30)
    SESSION_MAX_HOURS = _env_int("SESSION_MAX_HOURS", 12)
    PERMANENT_SESSION_LIFETIME = timedelta(hours=SESSION_MAX_HOURS)

    # Directory sign-in (LDAP / Active Directory); off while LDAP_URL is empty. See docs/sign-in.md.
    LDAP_URL = os.environ.get("LDAP_URL", "")
    LDAP_STARTTLS = _env_bool("LDAP_STARTTLS", False)
    LDAP_BIND_DN = os.environ.get("LDAP_BIND_DN", "")
    LDAP_BIND_PASSWORD = os.environ.get("LDAP_BIND_PASSWORD", "")
    LDAP_USER_BASE = os.environ.get("LDAP_USER_BASE", "")
    LDAP_USER_FILTER = os.environ.get("LDAP_USER_FILTER", "(uid={username})")
    LDAP_ADMIN_GROUP_DN = os.environ.get("LDAP_ADMIN_GROUP_DN", "")
    LDAP_CLINICIAN_GROUP_DN = os.environ.get("LDAP_CLINICIAN_GROUP_DN", "")
    LDAP_CA_FILE = os.environ.get("LDAP_CA_FILE", "")  # PEM of the CA that signed the directory's certificate
    LDAP_TIMEOUT_SECONDS = _env_int("LDAP_TIMEOUT_SECONDS", 5)
    # How often the job worker asks the directory about every directory account (0: never): a leaver
    # loses sessions and tokens within this many minutes, not at a next sign-in that never comes.
    DIRECTORY_RECHECK_MINUTES = _env_int("DIRECTORY_RECHECK_MINUTES", 15)

    # API tokens: life of a new token (`users token --days` overrides it per token).
    API_TOKEN_DAYS = _env_int("API_TOKEN_DAYS", 90)
    # Rate limits in Flask-Limiter notation, per token and per user: far above what a person
    # clicking or a well-behaved script sends, low enough to stop a runaway loop in seconds.
    RATE_LIMITS_ENABLED = _env_bool("RATE_LIMITS_ENABLED", True)
    API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "20/second;600/minute")
    UPLOAD_RATE_LIMIT = os.environ.get("UPLOAD_RATE_LIMIT", "10/second;300/minute")
    # Sign-in form posts per client address: each refused one is an audit row, so this bounds what a
    # flood of attempts can add to the permanent trail (docs/security.md).
    SIGN_IN_RATE_LIMIT = os.environ.get("SIGN_IN_RATE_LIMIT", "30/minute")
    # Decoded size one upload may need (pixels x channels x bytes per sample), checked from the header.
    DECODE_MEMORY_MB = _env_int("DECODE_MEMORY_MB", 100)
    # File names often carry a patient's name or MRN: stored only when a site opts in.
    STORE_ORIGINAL_FILENAMES = _env_bool("STORE_ORIGINAL_FILENAMES", False)
    # Audit events older than this are deleted by `flask audit prune` (7 years by default).
    AUDIT_RETENTION_DAYS = _env_int("AUDIT_RETENTION_DAYS", 2555)

    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SESSION_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None  # a sign-in page left open over a shift must still work
    TRUSTED_PROXIES = _env_int("TRUSTED_PROXIES", 0)
    # Strict-Transport-Security is opt-in: on a plain-http intranet it would lock browsers out.
    # Set it (e.g. 31536000) only once the site is served over HTTPS for good.
    HSTS_SECONDS = _env_int("HSTS_SECONDS", 0)

    # Redis, when set, holds the rate-limit counters (shared by every worker and replica; per process in
    # memory otherwise) and the background jobs (docs/jobs.md; Huey on SQLite in the instance folder otherwise).
    REDIS_URL = os.environ.get("REDIS_URL") or None
    JOBS_QUEUE_NAME = os.environ.get("JOBS_QUEUE_NAME", "cxr-jobs")
    # A worker renews its hold on a job at least this often; one silent for longer is taken to be dead.
    JOBS_LEASE_SECONDS = _env_int("JOBS_LEASE_SECONDS", 20)
    # The queue worker yields the CPU to the web workers: OS priority and TensorFlow threads.
    JOBS_WORKER_NICE = _env_int("JOBS_WORKER_NICE", 10)
    JOBS_WORKER_TF_THREADS = _env_int("JOBS_WORKER_TF_THREADS", 1)

    # Validation runs (docs/validation.md): the largest labelled archive an admin may upload.
    VALIDATION_MAX_FILES = _env_int("VALIDATION_MAX_FILES", 5000)
    VALIDATION_MAX_BYTES = _env_int("VALIDATION_MAX_BYTES", 2 * 1024**3)

    # The DICOM node (docs/dicom.md): where it listens, whom it accepts, where its results go.
    DICOM_AE_TITLE = os.environ.get("DICOM_AE_TITLE", "CXRSCREEN")
    DICOM_PORT = _env_int("DICOM_PORT", 11112)
    DICOM_BIND = os.environ.get("DICOM_BIND", "127.0.0.1")
    DICOM_ALLOWED_CALLING_AETS = tuple(
        aet.strip() for aet in os.environ.get("DICOM_ALLOWED_CALLING_AETS", "").split(",") if aet.strip()
    )
    DICOM_RESULTS_DESTINATION = os.environ.get("DICOM_RESULTS_DESTINATION") or None  # AE@host:port
    # Undelivered results are retried with a doubling wait, up to this long between tries and this many tries.
    DICOM_SEND_MAX_BACKOFF_SECONDS = _env_int("DICOM_SEND_MAX_BACKOFF_SECONDS", 300)
    DICOM_SEND_MAX_ATTEMPTS = _env_int("DICOM_SEND_MAX_ATTEMPTS", 60)
    # Long side of the secondary-capture image sent back (the film with its heat map).
    DICOM_CAPTURE_SIZE = _env_int("DICOM_CAPTURE_SIZE", 1024)
    # The DICOM node gives way to the web workers (it spools and queues; screening is the queue worker's).
    DICOM_LISTENER_NICE = _env_int("DICOM_LISTENER_NICE", 10)
    # The clinicians' worklist shows the films received from the PACS in the last hours.
    WORKLIST_HOURS = _env_int("WORKLIST_HOURS", 24)


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    # Plain http on a developer's machine or the quick start: secure cookies would never be sent back.
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
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
    name = os.environ.get("APP_ENV", "production")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"APP_ENV must be one of {sorted(CONFIGS)}, not {name!r}") from None
