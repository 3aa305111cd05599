"""gunicorn settings, each overridable from the environment (docs/deployment.md, Configuration).

Inference is CPU-bound, so the defaults split the machine's cores between worker processes and
TensorFlow's per-worker thread pool: WEB_WORKERS x INFERENCE_THREADS is about the core count.
"""

import os
import time

from deploy.gunicorn_hooks import (
    bind_address,
    cpu_count,
    heartbeat_while_loading,
    limit_heap_growth,
    load_model_in_worker,
)
from webapp.env import SECONDS_A_DAY, env_int, env_str, exit_on_config_error

# A bad value stops gunicorn with one line naming the variable, before any worker starts.
with exit_on_config_error("gunicorn"):
    cores = cpu_count()
    # Past about eight workers, memory (one model per worker) grows faster than throughput; the
    # spare cores then go to each worker's TensorFlow thread pool instead.
    workers = env_int("WEB_WORKERS", min(cores, 8), minimum=1)
    inference_threads = env_int("INFERENCE_THREADS", max(1, cores // workers), minimum=1)

    bind = bind_address(os.environ.get("BIND", ""))
    # gunicorn's gthread worker, answering the requests gunicorn refuses before the app sees them
    # (request line or headers too long, not HTTP) in the API's JSON error body, not an HTML page.
    worker_class = "deploy.gunicorn_worker.JsonRefusalWorker"
    # Two request threads per worker let a probe or an upload's network I/O proceed while the
    # other thread runs the model; more would only queue on the same cores.
    threads = env_int("WEB_THREADS", 2, minimum=1)
    # A worker takes a new connection only while it has a free request thread (gunicorn would let it
    # hold a thousand): otherwise one worker can take three of four concurrent uploads, one of them
    # waiting behind the model, while the other worker idles (docs/serving.md, "Connections per worker").
    worker_connections = env_int("WEB_WORKER_CONNECTIONS", threads, minimum=1)
    # No preload: TensorFlow is not fork-safe, so each worker loads the model after the fork.
    preload_app = False
    # A worker silent this long is killed: far above the slowest legitimate upload.
    timeout = env_int("WEB_TIMEOUT", 120, minimum=1, maximum=SECONDS_A_DAY)
    # The model load in post_worker_init (TensorFlow import + load + warm-up: seconds on an idle
    # server, over a minute on a starved one) keeps the worker's heartbeat going up to this bound.
    model_load_timeout = env_int("MODEL_LOAD_TIMEOUT", 600, minimum=1, maximum=SECONDS_A_DAY)
    graceful_timeout = env_int("WEB_GRACEFUL_TIMEOUT", 30, minimum=1, maximum=SECONDS_A_DAY)
    # Keep-alive needs connection slots beyond the threads; without them every answer closes its
    # connection (gunicorn would warn at each start), and a connection that sends nothing is closed as
    # soon as gunicorn gives up waiting for it instead of holding a slot for 5 s more.
    keepalive = 5 if worker_connections > threads else 0
    # Recycle workers now and then so slow memory growth in native libraries cannot accumulate;
    # the jitter keeps workers from all reloading the model at the same moment.
    max_requests = env_int("WEB_MAX_REQUESTS", 2000)
    max_requests_jitter = env_int("WEB_MAX_REQUESTS_JITTER", max(1, max_requests // 10)) if max_requests else 0

# The heartbeat file lives in memory: a slow or full disk must not get healthy workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# The app writes one JSON line per request to stdout (webapp/request_log.py) with the request
# id, user, status and latency; gunicorn's own access line would only repeat it without those.
# Set GUNICORN_ACCESS_LOG=- to have it as well.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = env_str("LOG_LEVEL", "info").lower()
# gunicorn's runtime control socket (resize, reload) is one more door to guard and would clash
# between two servers run by the same user; containers are managed from outside instead.
control_socket_disable = True


def on_starting(server):
    """Build the app once in the master before any worker starts, to check its settings: a bad one
    then stops gunicorn with one line naming it, where every worker failing at once made gunicorn
    print its own traceback. Builds no model (TensorFlow stays out of the master)."""
    with exit_on_config_error("gunicorn"):
        from webapp import create_app

        create_app()


def post_fork(server, worker):
    worker.forked_at = time.monotonic()
    limit_heap_growth()


def post_worker_init(worker):
    """Load and warm the model right after the fork, before this worker accepts a request.

    A missing or broken model must not crash the worker (the arbiter would respawn it in a
    loop): the failure is logged once and /readyz answers 503 with the reason.
    """
    with heartbeat_while_loading(worker.notify, interval=max(1, timeout // 4), limit=model_load_timeout):
        load_model_in_worker(worker.wsgi, inference_threads, worker.log, since=worker.forked_at)
