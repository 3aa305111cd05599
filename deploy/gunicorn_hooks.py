"""What gunicorn.conf.py needs from the app: sizing from the environment and the worker start hook.

Nothing here imports TensorFlow at module level: gunicorn's master reads this before forking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from webapp.env import ConfigError


def bind_address(value: str) -> str:
    """BIND as gunicorn takes it (host:port, host, unix:path); a port above 65535 is refused
    here with the variable named, where gunicorn stopped with an OverflowError traceback."""
    address = value.strip() or "0.0.0.0:8000"
    _, colon, port = address.rpartition(":")
    if colon and not address.startswith(("unix:", "fd://")) and port.isdigit() and int(port) > 65535:
        raise ConfigError(f"BIND's port must be from 0 to 65535, not {port}")
    return address


def cpu_count(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may really use: its CPU affinity, capped by a container CPU quota.

    `docker run --cpus=2` on a 32-core host sets a cgroup quota, not the affinity, so
    os.cpu_count() alone would start 16 times too many threads.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return max(1, cores)
    if quota in ("max", "-1"):
        return max(1, cores)
    try:
        limit = math.ceil(int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return max(1, cores)
    return max(1, min(cores, limit))


@contextmanager
def heartbeat_while_loading(notify, interval: float, limit: float):
    """Tell gunicorn's arbiter the worker is alive while it loads the model, for up to `limit` s.

    The arbiter kills a worker that stays silent for `timeout` seconds, and a worker loading
    TensorFlow says nothing. On a busy machine the load can outlast the timeout and the worker
    would be killed and respawned in a loop; past `limit` the beats stop, so a load that truly
    hangs is still killed.
    """
    stop = threading.Event()

    def beat() -> None:
        deadline = time.monotonic() + limit
        while not stop.wait(interval) and time.monotonic() < deadline:
            notify()

    thread = threading.Thread(target=beat, name="model-load-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
HEAP_SETTINGS = {_M_ARENA_MAX: 2, _M_MMAP_THRESHOLD: 1 << 20, _M_TRIM_THRESHOLD: 1 << 20}


def limit_heap_growth() -> bool:
    """Keep a worker's memory flat after it has decoded large films.

    glibc raises its mmap threshold each time a large block is freed, so after a few 3000 px
    films or 8 MB DICOMs every later buffer of that size comes from the heap and stays resident
    (about +70 MB per worker in our runs), and each request thread gets its own arena. Fixing
    the thresholds at 1 MB and the arenas at two returns such buffers to the system.
    Returns False where the C library is not glibc (the call is then skipped).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in HEAP_SETTINGS.items())


def set_inference_threads(threads: int, log: logging.Logger) -> None:
    """Size TensorFlow's thread pools; only possible before TensorFlow runs its first operation."""
    from webapp.inference.tensorflow_env import tensorflow

    tf = tensorflow()

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # TensorFlow already initialised in this process
        log.warning("could not set INFERENCE_THREADS=%d: %s", threads, exc)


def load_model_in_worker(app, threads: int, log: logging.Logger, since: float | None = None) -> None:
    """Configure TensorFlow and load + warm the model in a freshly forked worker. Never raises.

    A worker that raised here would die and be respawned, in a loop, for as long as the model is
    broken. Instead the failure is remembered by webapp.inference.runtime (which logs it once)
    and /readyz answers 503 with the reason.
    """
    from webapp.inference.runtime import ModelUnavailable, analyzer_for

    started = time.monotonic() if since is None else since
    try:
        set_inference_threads(threads, log)
        analyzer = analyzer_for(app.config)
    except ModelUnavailable:
        return  # already logged, once, with the reason
    except Exception:  # noqa: BLE001  (an unexpected failure must still not kill the worker)
        log.exception("worker start-up failed while preparing the model; /readyz will report it")
        return
    log.info(
        "worker ready %.1f s after start: model %s loaded and warmed, %d inference threads",
        time.monotonic() - started,
        analyzer.model_version,
        threads,
    )
