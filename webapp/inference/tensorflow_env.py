"""The one place TensorFlow is imported from and its environment set: every process (gunicorn
workers, the job worker, the DICOM node, the CLI) gets TensorFlow through `tensorflow()`.

TF_CPP_MIN_LOG_LEVEL=2 quiets TensorFlow's C++ INFO lines, but not the oneDNN notice ("oneDNN custom
operations are on ..."): two of its libraries print it while they load, each once, through absl before
absl's logging is set up, and no variable reaches that. So the import runs with file descriptor 2
caught: the notice goes, and anything else written there is logged again as JSON (webapp/logs.py).
oneDNN itself stays on (it is measured faster, docs/serving.md); only its notice is dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from types import ModuleType

log = logging.getLogger(__name__)

_NOTICE = (
    "oneDNN custom operations are on",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)
_lock = threading.Lock()


def tensorflow() -> ModuleType:
    """`import tensorflow`, the first time with its start-up notices kept out of the log."""
    with _lock:
        if "tensorflow" not in sys.modules:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines; errors still show
            _quiet_import()
    import tensorflow as tf

    return tf


def _quiet_import() -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if line.strip() and not any(notice in line for notice in _NOTICE):
                    log.warning("tensorflow: %s", line.strip())
