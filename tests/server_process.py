"""A throwaway server the tests started (Redis, pgbouncer, nginx): waiting for it to answer, stopping it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable


def wait_until_answering(
    answers: Callable[[], None],
    process: subprocess.Popen,
    refused: type[Exception] | tuple[type[Exception], ...],
    gave_up: Callable[[], Exception],
    timeout: float = 10.0,
) -> None:
    """Call `answers` until it stops raising `refused`; if the process exits first or `timeout` passes,
    raise what `gave_up` makes (it stops the server and says why)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answers()
            return
        except refused:
            if process.poll() is not None or time.monotonic() > deadline:
                raise gave_up() from None
            time.sleep(0.05)


def stop_server(process: subprocess.Popen, folder) -> None:
    """Stop the server if it still runs, and remove its folder."""
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)
