"""The gunicorn worker of gunicorn.conf.py refuses what gunicorn refuses, in the API's JSON error body.

A real gunicorn with that worker class serves a one-line WSGI app here (no model to load, none of the
project's other settings), and raw sockets send what no HTTP client library would: a 5 KB request
line, 150 headers, bytes that are not HTTP.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time

import pytest
from gunicorn.http import errors

from deploy.gunicorn_worker import JsonRefusalWorker
from tests.live_app import LiveApp
from webapp.errors.http_refusals import refusal

WORKER = "deploy.gunicorn_worker.JsonRefusalWorker"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def bare_gunicorn(app: LiveApp, worker: str, wsgi: str, *options: str) -> list[str]:
    """gunicorn serving `wsgi` with `worker` and gunicorn's defaults. Without `--config` gunicorn reads
    ./gunicorn.conf.py, the project's (the server runs in the repository): it built the whole app in
    the master and loaded the model in each worker for a one-line app, about 10 s and a traceback per
    worker in the log ("'function' object has no attribute 'config'")."""
    config = app.instance / "bare.gunicorn.conf.py"
    config.write_text("# gunicorn's defaults, not the project's gunicorn.conf.py\n")
    return [sys.executable, "-m", "gunicorn", "--config", str(config), "--worker-class", worker, *options, wsgi]


ONE_WORKER = ("--threads", "2", "--workers", "1")


@contextlib.contextmanager
def bare_server(name: str, worker: str, wsgi: str, *options: str):
    """A started `bare_gunicorn` on a port of its own, answering `/`; stopped on leaving."""
    with LiveApp(name) as app:
        app.argv = bare_gunicorn(app, worker, wsgi, "--bind", f"127.0.0.1:{app.port}", *options)
        app.start()
        app.wait_ready("/", timeout=60)
        yield app


@pytest.fixture(scope="module")
def server():
    with bare_server(
        "refusals", WORKER, "tests.test_gunicorn_worker:hello", "--threads", "2", "--access-logfile", "-"
    ) as app:
        yield app


def answer_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def exchange(server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        received = answer_of(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b"GET /api/v1/predictions?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: y\r\n" * 150 + b"\r\n", 431, "headers_too_large"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"THIS IS NOT HTTP\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad\x01Name: x\r\n\r\n", 400, "bad_request"),
        # Found by pen-testing: these two were gunicorn's HTML pages, echoing the header's value.
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n",
            501,
            "unsupported_transfer_coding",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nhi", 417, "expectation_failed"),
    ],
    ids=[
        "long request line",
        "too many headers",
        "one huge header",
        "not HTTP",
        "malformed header",
        "bad name",
        "unknown transfer coding",
        "unknown expectation",
    ],
)
def test_requests_gunicorn_refuses_get_the_api_error_body(server, raw, status, code):
    answered, headers, body = exchange(server, raw)
    assert answered == status
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"].endswith(".")


def test_the_worker_still_serves_the_app(server):
    answered, _, body = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (answered, body) == (200, b"hello")


def test_the_test_server_runs_without_the_project_settings(server):
    """Only the worker class is the project's: no app built in the master, no model loaded in a worker
    (whose failure on this one-line app was logged before the worker served its first request)."""
    log = server.log_text()
    assert f"Using worker: {WORKER}" in log
    assert "Traceback" not in log and "preparing the model" not in log


def test_a_refused_request_whose_line_was_read_is_in_the_access_log(server):
    # Two Content-Lengths: a request-smuggling attempt, which the access log must show.
    raw = b"POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbody"
    answered, _, body = exchange(server, raw)
    assert answered == 400
    server.wait_for_log(f'"POST /smuggle HTTP/1.1" 400 {len(body)} ', 1, timeout=10)


def test_a_header_the_app_sends_wrong_is_left_to_gunicorn_as_a_fault():
    assert refusal(errors.InvalidResponseHeader("bad\nvalue")) is None
    assert refusal(errors.InvalidHeader("X"))[:3] == (400, "Bad Request", "bad_request")


class QuickReadTimeoutWorker(JsonRefusalWorker):
    """The project's worker with a one-second read timeout, so the test waits seconds, not minutes."""

    read_timeout_seconds = 1


def read_the_body(environ, start_response):
    body = environ["wsgi.input"].read()  # as the app's form parser does
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def quick_server():
    worker = "tests.test_gunicorn_worker.QuickReadTimeoutWorker"
    with bare_server("read-timeout", worker, "tests.test_gunicorn_worker:read_the_body", *ONE_WORKER) as app:
        yield app


@pytest.mark.parametrize(
    "stalled",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # headers never finished
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part",  # body never finished
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # chunk never finished
    ],
    ids=["headers", "body", "chunk"],
)
def test_clients_that_stop_sending_do_not_hold_the_request_threads(quick_server, stalled):
    """Found by pen-testing the app's gunicorn: two connections that sent half a request and waited
    (one per request thread) left every other client unanswered for as long as they stayed open;
    now for the read timeout."""
    stallers = [socket.create_connection(("127.0.0.1", quick_server.port)) for _ in range(2)]
    try:
        for sock in stallers:
            sock.sendall(stalled)
        started = time.monotonic()
        answered, _, body = exchange(quick_server, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
        assert (answered, body) == (200, b"ok")
        assert time.monotonic() - started < 8  # the read timeout (1 s), not the stallers' patience
    finally:
        for sock in stallers:
            sock.close()


def test_a_client_that_stops_sending_is_one_log_line_not_a_traceback(quick_server):
    """A stalled client is an everyday event (a laptop asleep mid-upload), not a fault: gunicorn logged
    each as "Socket error processing request." with a 20-line traceback of the timed-out read."""
    with socket.create_connection(("127.0.0.1", quick_server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        deadline = time.monotonic() + 10
        while "stopped sending" not in quick_server.log_tail(50) and time.monotonic() < deadline:
            time.sleep(0.2)
    log = quick_server.log_tail(200)
    assert "closed a connection whose client stopped sending for 1 s" in log
    assert "BlockingIOError" not in log and "Socket error processing request" not in log


def test_a_slow_but_moving_body_is_read_whole(quick_server):
    """The timeout is per read: a client that keeps sending, each piece within it, is served."""
    with socket.create_connection(("127.0.0.1", quick_server.port), timeout=20) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 6\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef"):
            time.sleep(0.6)
            sock.sendall(piece)
        received = answer_of(sock)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"abcdef")


def answer_to_an_upload_of_an_unread_body(port: int) -> bytes:
    """The answer to an 8 MB body the app does not read (as a 401 or 413 does), sent whole before
    reading as http.client does: a reset under the body raises here."""
    body = b"x" * (8 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        return answer_of(sock)


def read_hello(sock: socket.socket) -> None:
    """Read `hello`'s whole answer without waiting for the server to close the connection."""
    received = b""
    while not received.endswith(b"hello"):
        received += sock.recv(65536)


def test_clients_that_keep_their_end_open_do_not_stall_the_worker(server):
    """Found sending raw requests to the app's gunicorn: after an answer with `Connection: close`,
    gunicorn drains the socket until the client closes its end, for up to 2 s, on the worker's one
    event-loop thread; a client that read its answer but kept the connection open (a pooled or idle
    script) froze that worker's accepting for 2 s, and four such /healthz probes kept the next
    client waiting 8 s. The drain now waits on the event loop instead."""
    holders = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
    try:
        for sock in holders:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        for sock in holders:
            read_hello(sock)
        started = time.monotonic()
        answered, _, body = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert (answered, body) == (200, b"hello")
        # It waited 4 s: the worker lingered 2 s on each of the last two holders (one per request
        # thread; the first two were lingered on before the last two were answered). Now milliseconds.
        assert time.monotonic() - started < 3.0
    finally:
        for sock in holders:
            sock.close()


def test_an_answer_before_the_body_is_read_reaches_a_client_still_sending_it(server):
    """An answer given without reading the body (401 without a token, 413 for a Content-Length over
    the limit) came with only 64 KB of the body drained: a client that sends its whole body before
    reading (http.client, HttpURLConnection) then met a reset (broken pipe) instead of the answer."""
    assert answer_to_an_upload_of_an_unread_body(server.port).startswith(b"HTTP/1.1 200 OK")


def test_the_last_answer_of_a_worker_recycled_by_max_requests_reaches_a_client_still_sending():
    """Found stopping workers with connections lingering: a stopping worker closed them at once, so the
    answer that ended a worker's max_requests (the production default recycles every ~2000), given
    before a body the app did not read, met a reset instead. It now lingers on to their deadline."""
    with bare_server("recycled", WORKER, "tests.test_gunicorn_worker:hello", *ONE_WORKER, "--max-requests", "1") as app:
        for _ in range(2):
            assert answer_to_an_upload_of_an_unread_body(app.port).startswith(b"HTTP/1.1 200 OK")
        # Each upload is served by a stopping worker: one recycled by it, or one recycled by the request
        # before that took it in the same turn of its event loop (gunicorn's own race), so the second
        # upload at least recycles a worker.
        app.wait_for_log("Autorestarting worker after current request.", 2, timeout=30)
        assert "Traceback" not in app.log_text()


class FewLingeringWorker(JsonRefusalWorker):
    """The project's worker with room for four lingering connections, not 256."""

    max_lingering = 4


@pytest.fixture(scope="module")
def few_lingering_server():
    worker = "tests.test_gunicorn_worker.FewLingeringWorker"
    with bare_server("few-lingering", worker, "tests.test_gunicorn_worker:hello", *ONE_WORKER) as app:
        yield app


def test_connections_that_ended_their_linger_leave_room_for_the_next(few_lingering_server):
    """Found counting lingering connections: the bound counted each connection until its deadline,
    closed or not, so after max_lingering ordinary clients (each closing as soon as it read its
    answer) within 2 s, the next was closed without lingering and an upload met a reset. At 256 per
    worker that is 128 connections a second."""
    for _ in range(2 * FewLingeringWorker.max_lingering):
        exchange(few_lingering_server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert answer_to_an_upload_of_an_unread_body(few_lingering_server.port).startswith(b"HTTP/1.1 200 OK")


def test_a_full_linger_makes_room_by_closing_the_oldest(few_lingering_server):
    """With max_lingering clients keeping their end open, a new connection was closed at once: an
    upload then met a reset, the bug lingering was for. The oldest lingering connection, which has
    had the most of its time, is closed instead."""
    holders = [socket.create_connection(("127.0.0.1", few_lingering_server.port), timeout=10) for _ in range(4)]
    try:
        for sock in holders:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            read_hello(sock)
        assert answer_to_an_upload_of_an_unread_body(few_lingering_server.port).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in holders:
            sock.close()
