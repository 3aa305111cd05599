"""One Analyzer per worker process, loaded lazily on first use.

TensorFlow is not fork-safe, so nothing here runs at import time: gunicorn forks its workers
first and each worker loads the model on its first request (or readiness probe). A model that
fails to load is reported once and remembered, so a broken file yields clear 503s instead of
workers crashing in a loop.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why, in words an operator can act on."""


_lock = threading.Lock()
_analyzer = None
_error: str | None = None


def get_analyzer(model_path: Path):
    global _analyzer, _error
    if _analyzer is not None:
        return _analyzer
    with _lock:
        if _analyzer is None and _error is None:
            try:
                from .analyzer import Analyzer  # imports TensorFlow: only after the fork

                _analyzer = Analyzer(Path(model_path))
            except Exception as exc:  # any failure to load is an operator problem, not a crash
                _error = f"model could not be loaded from {model_path}: {type(exc).__name__}: {exc}"
                log.error(_error)
    if _analyzer is None:
        raise ModelUnavailable(_error)
    return _analyzer


def model_error() -> str | None:
    return _error


def reset_for_tests() -> None:
    global _analyzer, _error
    with _lock:
        _analyzer, _error = None, None
