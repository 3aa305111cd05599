"""gunicorn's threaded worker, refusing the requests gunicorn itself refuses in the API's error body.

A request line longer than `limit_request_line`, more or larger header fields than gunicorn allows,
or bytes that are not HTTP never reach the app: gunicorn answers them from `handle_error` with an
HTML page. An integration script of the JSON API then gets the one answer that is not
`{"error": {"code", "message"}}`. This worker gives those refusals the same status gunicorn does
(400, 414, 417, 431, 501) and the API's body, from the app's own table
(webapp/errors/http_refusals.py); anything else (a fault in the app, TLS) is left to gunicorn.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import struct
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

    def init_process(self):
        self.log.error_log.addFilter(StalledClientLine(self.read_timeout_seconds))
        super().init_process()

    def enqueue_req(self, conn):
        # SO_RCVTIMEO, not socket.settimeout: gunicorn makes the socket blocking again before each
        # request, which resets Python's timeout but not the kernel's.
        seconds = struct.pack("ll", self.read_timeout_seconds, 0)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, seconds)
        super().enqueue_req(conn)

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
