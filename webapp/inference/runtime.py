"""One Analyzer per model file per worker process, loaded lazily on first use.

TensorFlow is not fork-safe, so nothing here runs at import time: gunicorn forks its workers
first and each worker loads the model on its first request (or readiness probe). A model that
fails to load is reported once and remembered, so a broken file yields clear 503s instead of
workers crashing in a loop; it is loaded again, once, when the model file or its card has changed
since (restored, replaced, its permissions fixed), so a repaired file needs no restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .model_card import card_path

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why, in words an operator can act on."""


@dataclass(frozen=True)
class _Failure:
    message: str
    files: tuple  # the model file's and its card's identity (files_identity) when the load began


_lock = threading.Lock()
# Keyed by the resolved model path: an analyzer, or the failure to load one.
_loaded: dict[Path, object] = {}


def files_identity(model_path: Path) -> tuple:
    """What changes when an operator restores, replaces or chmods the model file or its card: two
    stat calls. (Until 5 December a failure was kept until restart: after the weights were put back,
    every upload was still refused until gunicorn and the job worker were restarted.)"""
    identity = []
    for path in (model_path, card_path(model_path)):
        try:
            st = os.stat(path)
        except OSError as exc:
            identity.append(exc.errno)
        else:
            identity.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(identity)


def _current(entry: object | None, key: Path) -> bool:
    """An analyzer, or a failure whose files have not changed since: no load to try."""
    return entry is not None and (not isinstance(entry, _Failure) or entry.files == files_identity(key))


def get_analyzer(model_path: Path, max_batch: int = 8, batch_window_ms: float = 0.0):
    """The process's Analyzer for `model_path`; the batching settings apply when this call loads it."""
    key = Path(model_path).resolve()
    entry = _loaded.get(key)
    if not _current(entry, key):
        with _lock:
            entry = _loaded.get(key)
            if not _current(entry, key):
                entry = _loaded[key] = _load(key, max_batch, batch_window_ms)
    if isinstance(entry, _Failure):
        raise ModelUnavailable(entry.message)
    return entry


def known_unavailable(model_path: Path) -> bool:
    """Whether this process's load of `model_path` failed and its files are as they were then: a
    page can say so up front without loading anything (the next request that needs the model
    tries again once they changed)."""
    key = Path(model_path).resolve()
    entry = _loaded.get(key)
    return isinstance(entry, _Failure) and _current(entry, key)


def analyzer_for(config: Mapping):
    """The process's Analyzer for an app's settings (MODEL_PATH and the INFERENCE_BATCH_* pair)."""
    return get_analyzer(config["MODEL_PATH"], config["INFERENCE_BATCH_MAX"], config["INFERENCE_BATCH_WINDOW_MS"])


def _load(model_path: Path, max_batch: int, batch_window_ms: float):
    files = files_identity(model_path)  # before: a file changed during the load is tried again
    try:
        from .analyzer import Analyzer  # imports TensorFlow: only after the fork

        return Analyzer(model_path, max_batch, batch_window_ms)
    except Exception as exc:  # any failure to load is an operator problem, not a crash
        message = f"model could not be loaded from {model_path}: {type(exc).__name__}: {exc}"
        log.error(message)
        return _Failure(message, files)
