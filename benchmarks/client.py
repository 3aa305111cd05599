"""A small threaded HTTP client for the benchmark: fixed request counts or a fixed duration.

One TCP connection per request (what an integration script using plain `requests.post` does),
so every connection error is a real one and not a keep-alive race. The multipart body of each
upload is built once; the client's own work per request is a fraction of a millisecond.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from .inputs import Upload

TIMEOUT_S = 120.0


@dataclass
class Result:
    upload: str
    status: int  # HTTP status, or 0 for a connection error / timeout
    latency_s: float
    label: str | None = None
    prediction_id: int | None = None
    error: str | None = None


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.results) / self.wall_s if self.wall_s else 0.0


class Target:
    """Where to send uploads: host, port, path and bearer token."""

    def __init__(self, port: int, path: str, token: str | None = None, host: str = "127.0.0.1"):
        self.host, self.port, self.path = host, port, path
        self.token = token
        self._bodies: dict[str, tuple[bytes, str]] = {}

    def _body(self, upload: Upload) -> tuple[bytes, str]:
        if upload.name not in self._bodies:
            boundary = uuid.uuid4().hex
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{upload.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            )
            body = head.encode() + upload.data + f"\r\n--{boundary}--\r\n".encode()
            self._bodies[upload.name] = (body, f"multipart/form-data; boundary={boundary}")
        return self._bodies[upload.name]

    def post(self, upload: Upload) -> Result:
        body, content_type = self._body(upload)
        headers = {"Content-Type": content_type, "Connection": "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            latency = time.perf_counter() - started
        except (OSError, http.client.HTTPException) as exc:
            return Result(upload.name, 0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
        result = Result(upload.name, response.status, latency)
        if response.status < 300:
            try:
                item = json.loads(payload)
                item = item["predictions"][0] if "predictions" in item else item
                result.label, result.prediction_id = item.get("label"), item.get("id")
            except (ValueError, KeyError, IndexError, TypeError):
                result.error = "unreadable JSON answer"
        return result


def run_count(target: Target, uploads: list[Upload], total: int, concurrency: int) -> Run:
    """Send `total` requests cycling through `uploads`, `concurrency` at a time."""
    counter = iter(range(total))
    lock = threading.Lock()

    def next_upload() -> Upload | None:
        with lock:
            index = next(counter, None)
        return None if index is None else uploads[index % len(uploads)]

    return _drive(target, next_upload, concurrency)


def run_for(target: Target, mix: list[tuple[Upload, int]], seconds: float, concurrency: int, seed: int = 6) -> Run:
    """Send weighted random uploads from `mix` for `seconds`, `concurrency` at a time."""
    rng = random.Random(seed)
    lock = threading.Lock()
    uploads, weights = zip(*mix)
    first_round = list(uploads)  # every kind at least once, however short the run
    deadline = time.perf_counter() + seconds

    def next_upload() -> Upload | None:
        if time.perf_counter() >= deadline:
            return None
        with lock:
            return first_round.pop() if first_round else rng.choices(uploads, weights)[0]

    return _drive(target, next_upload, concurrency)


def _drive(target: Target, next_upload, concurrency: int) -> Run:
    run = Run()
    lock = threading.Lock()

    def worker() -> None:
        while (upload := next_upload()) is not None:
            result = target.post(upload)
            with lock:
                run.results.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.wall_s = time.perf_counter() - started
    return run
