"""The rate limits' counters in this process's memory (no REDIS_URL), without a thread per request.

The limits library's MemoryStorage drops expired counters from a `threading.Timer` of 10 ms that
it starts again at the first count after the last one ran: under a steady trickle of uploads, one
new thread per counted request (41 in 40 uploads), whose start the request waits for. Measured in
process, 0.4-1.5 ms of each request's wall time on a busy 2-core host; no option of limits 5.8 or
Flask-Limiter 4.1 turns it off. This storage (limits' registry of custom storages, scheme
`cxr-memory://`) counts exactly as MemoryStorage does and drops the expired counters inline, at
most once a second, in the request that finds the last sweep that old: the memory they hold stays
bounded by the keys of the last window and a second, and no thread is started.
"""

from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SCHEME = "cxr-memory"
SWEEP_INTERVAL_S = 1.0


class SweptMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._swept_at = time.monotonic()
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        """Called by MemoryStorage before each count (fixed, moving and sliding windows alike)."""
        if time.monotonic() - self._swept_at < SWEEP_INTERVAL_S:
            return
        if not self._sweeping.acquire(blocking=False):
            return  # another request thread is sweeping
        try:
            self._swept_at = time.monotonic()
            self._MemoryStorage__expire_events()
        finally:
            self._sweeping.release()
