"""gunicorn's threaded worker, refusing the requests gunicorn itself refuses in the API's error body.

A request line longer than `limit_request_line`, more or larger header fields than gunicorn allows,
or bytes that are not HTTP never reach the app: gunicorn answers them from `handle_error` with an
HTML page. An integration script of the JSON API then gets the one answer that is not
`{"error": {"code", "message"}}`. This worker gives those refusals the same status gunicorn does
(400, 414, 417, 431, 501) and the API's body, from the app's own table
(webapp/errors/http_refusals.py); anything else (a fault in the app, TLS) is left to gunicorn.
It also gives up reads from a client that stopped sending, and lingers on closed connections
without blocking the worker's event loop (both below).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import selectors
import socket
import ssl
import struct
import time
from datetime import datetime

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

from webapp.errors.http_refusals import refusal


def error_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class StalledClientLine(logging.Filter):
    """gunicorn logs a read that timed out (below) as "Socket error processing request." with its
    traceback; a client that stopped sending is an everyday event, so it becomes one warning line."""

    def __init__(self, seconds: int):
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
            record.msg, record.args = "closed a connection whose client stopped sending for %d s", (self.seconds,)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


class JsonRefusalWorker(ThreadWorker):
    # A client that stops sending in the middle of its request (headers or body: a laptop put to
    # sleep mid-upload, a script killed with its connection half-open) held a request thread for as
    # long as the connection stayed open; two such connections per worker and the app answered
    # nobody. Each read from the client now gives up after this long without a byte (nginx's
    # client_header_timeout and client_body_timeout, 60 s by default, count the same way); a slow but
    # moving upload is not affected. Past it the read fails with EAGAIN: gunicorn closes the
    # connection while reading headers, and werkzeug reads it as a client gone while reading the
    # body (400, nothing written). A client that stalls on purpose, again and again, is still the
    # buffering proxy's to stop (docs/serving.md, "Connections per worker").
    read_timeout_seconds = 60
    # After an answer that closes its connection, gunicorn lingers (RFC 9112 9.6): it half-closes and
    # reads what the client still sends until the client closes too, so that bytes left unread do not
    # make the kernel reset the connection and destroy the answer. It did that on the worker's one
    # event-loop thread, blocking, for up to 2 s: a client that kept its end open after reading the
    # answer froze the worker's accepting for 2 s each (four such /healthz probes: 8 s for the next
    # client), and it drained only 64 KB, so a client still sending a body the app never read (401,
    # 413) met a reset instead of the answer. The lingering now waits on the event loop, with no cap
    # on the bytes drained within the time.
    linger_seconds = 2.0
    # A bound on connections lingering at once (file descriptors); past it the oldest is closed.
    max_lingering = 256

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lingering: dict[socket.socket, float] = {}  # each to its deadline, oldest first

    def init_process(self):
        self.log.error_log.addFilter(StalledClientLine(self.read_timeout_seconds))
        super().init_process()

    def enqueue_req(self, conn):
        # SO_RCVTIMEO, not socket.settimeout: gunicorn makes the socket blocking again before each
        # request, which resets Python's timeout but not the kernel's.
        seconds = struct.pack("ll", self.read_timeout_seconds, 0)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, seconds)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        # gunicorn closes a connection whose handler returned False (or was cancelled); a kept-alive or
        # deferred one, or a handler that raised, is still gunicorn's to handle.
        if fs.cancelled() or (fs.exception() is None and not fs.result()):
            self.nr_conns -= 1
            self.linger(conn.sock)
        else:
            super().finish_request(conn, fs)

    def linger(self, sock: socket.socket) -> None:
        if len(self.lingering) >= self.max_lingering:
            # The oldest has had the most of its time; the newest may be a client still sending a body
            # the app did not read, whose answer closing it now would reset.
            self.end_linger(next(iter(self.lingering)))
        try:
            sock.shutdown(socket.SHUT_WR)  # the answer is complete: FIN
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self.drain)
        except (OSError, ValueError):
            util.close(sock)
            return
        self.lingering[sock] = time.monotonic() + self.linger_seconds

    def drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return  # more may come: keep lingering
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            pass
        self.end_linger(sock)  # the client closed its end (or reset it)

    def end_linger(self, sock: socket.socket) -> None:
        # Counted until closed, not until its deadline: the bound is on connections open.
        self.lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):  # already unregistered when the client closed first
            self.poller.unregister(sock)
        util.close(sock)

    def murder_keepalived(self, force=False):
        # Called on every turn of the event loop (and with force=True when the worker stops).
        super().murder_keepalived(force)
        if force:
            self.run_out_lingering()
        self.end_lingering_past_deadline()

    def end_lingering_past_deadline(self) -> None:
        now = time.monotonic()
        while self.lingering and next(iter(self.lingering.values())) <= now:
            self.end_linger(next(iter(self.lingering)))

    def run_out_lingering(self) -> None:
        """A stopping worker lingers on to the deadlines (linger_seconds at most), as gunicorn did: cut at
        once, the last answer of a worker recycled by max_requests, given before a body the app did not
        read, was reset under the client still sending it. Nothing else is served meanwhile: the rest of
        the poller (requests finishing past graceful_timeout, connections that sent nothing yet) is
        left as gunicorn leaves it when it stops, to the process's exit."""
        for key in list(self.poller.get_map().values()):
            if key.data != self.drain:
                self.poller.unregister(key.fileobj)
        while self.lingering:
            left = next(iter(self.lingering.values())) - time.monotonic()
            self.wait_for_and_dispatch_events(timeout=max(left, 0.0))
            self.end_lingering_past_deadline()

    def handle_error(self, req, client, addr, exc):
        answer = refusal(exc)
        if answer is None:
            return super().handle_error(req, client, addr, exc)
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket has no address
        self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        response = error_response(*answer)
        # A bad header (two Content-Lengths, a forged Transfer-Encoding: the marks of request
        # smuggling) comes with the request line already read; gunicorn writes such a request to
        # the access log, and so does this worker. (InvalidRequestLine's `req` is only the line.)
        if isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
            req = req or getattr(exc, "req", None)
        if req is not None:
            body = response.partition(b"\r\n\r\n")[2]
            self.log_refusal(req, client, addr, answer, len(body), datetime.now() - started)
        try:
            util.write_nonblock(client, response)
        except OSError:
            self.log.debug("Failed to send error message.")

    def log_refusal(self, req, client, addr, answer, length, request_time) -> None:
        environ = default_environ(req, client, self.cfg)
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
        logged = Response(req, client, self.cfg)
        logged.status = f"{answer[0]} {answer[1]}"
        logged.sent = length
        self.log.access(logged, req, environ, request_time)
