"""One Analyzer per model file per worker process, loaded lazily on first use.

TensorFlow is not fork-safe, so nothing here runs at import time: gunicorn forks its workers
first and each worker loads the model on its first request (or readiness probe). A model that
fails to load is reported once and remembered, so a broken file yields clear 503s instead of
workers crashing in a loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why, in words an operator can act on."""


_lock = threading.Lock()
# Keyed by the resolved model path: an analyzer, or the message of the failure to load one.
_loaded: dict[Path, object] = {}


def get_analyzer(model_path: Path, max_batch: int = 8, batch_window_ms: float = 0.0):
    """The process's Analyzer for `model_path`; the batching settings apply when this call loads it."""
    key = Path(model_path).resolve()
    entry = _loaded.get(key)
    if entry is None:
        with _lock:
            entry = _loaded.get(key)
            if entry is None:
                entry = _load(key, max_batch, batch_window_ms)
                _loaded[key] = entry
    if isinstance(entry, str):
        raise ModelUnavailable(entry)
    return entry


def analyzer_for(config: Mapping):
    """The process's Analyzer for an app's settings (MODEL_PATH and the INFERENCE_BATCH_* pair)."""
    return get_analyzer(config["MODEL_PATH"], config["INFERENCE_BATCH_MAX"], config["INFERENCE_BATCH_WINDOW_MS"])


def _load(model_path: Path, max_batch: int, batch_window_ms: float):
    try:
        from .analyzer import Analyzer  # imports TensorFlow: only after the fork

        return Analyzer(model_path, max_batch, batch_window_ms)
    except Exception as exc:  # any failure to load is an operator problem, not a crash
        message = f"model could not be loaded from {model_path}: {type(exc).__name__}: {exc}"
        log.error(message)
        return message
