"""A queue worker gives way to the web workers: interactive uploads are screened synchronously by
gunicorn, so background work (validation runs, films from the PACS) must not starve it. The worker
runs at a lower OS priority and lets TensorFlow use few threads, so a burst of background films
slows an upload only by what one background thread takes (docs/dicom.md has the measurement)."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from ..extensions import db

log = logging.getLogger(__name__)


def yield_cpu(niceness: int, tf_threads: int) -> None:
    """Call before the model is loaded (TensorFlow fixes its thread pools when first used)."""
    if niceness > 0:
        try:
            os.nice(niceness)
        except OSError as exc:  # not allowed here (some containers): carry on at normal priority
            log.warning("could not lower the worker's priority: %s", exc)
    if tf_threads > 0:
        from ..inference.tensorflow_env import tensorflow

        tf = tensorflow()
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)


def exit_at_once() -> NoReturn:
    """End a process that gave way, its work closed, without tearing the interpreter down: that takes
    0.4 s of CPU (some 1,700 modules), and at nice 10 on a busy host the DICOM node took 4 to 9 s to
    exit after SIGTERM, near `docker stop`'s 10 s grace (killed past it: 137). Its database connections
    are closed and its log flushed first; nothing else is left to write."""
    db.engine.dispose()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
