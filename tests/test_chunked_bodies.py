"""A chunked request body that breaks off in a malformed way is the client's fault: a 400 (431 for
an oversized trailer) in the usual error body, never a 500.

gunicorn decodes a chunked body only as the app reads it, so its parse errors for the chunks and the
trailer are raised inside the view (werkzeug's form parser reading `wsgi.input`), past the worker
that answers malformed requests (deploy/gunicorn_worker.py). Found by sending
`Transfer-Encoding: chunked` with the chunk size `zz` to a running server: 500 `internal_error` and a
stack trace in the log. Here the body stream raises gunicorn's own exceptions, as gunicorn's does.
"""

from __future__ import annotations

import io

import pytest
from gunicorn.http import errors

from tests.helpers import csrf_token
from webapp.extensions import db
from webapp.models import Prediction

BROKEN_BODIES = [
    (errors.InvalidChunkSize(b"zz"), 400, "bad_request"),
    (errors.ChunkMissingTerminator(b"XX"), 400, "bad_request"),
    (errors.InvalidChunkExtension("bare CR not allowed"), 400, "bad_request"),
    (errors.InvalidHeader("bare LF as line terminator"), 400, "bad_request"),
    (errors.LimitRequestHeaders("limit request trailer section size"), 431, "headers_too_large"),
]
PAGE_CASES = [(BROKEN_BODIES[0][0], 400, "not well-formed HTTP"), (BROKEN_BODIES[-1][0], 431, "header fields")]
IDS = ["chunk size", "chunk terminator", "chunk extension", "trailer", "trailer size"]


class BrokenChunkedBody(io.RawIOBase):
    """The start of a multipart upload, then what gunicorn raises at the malformed chunk."""

    def __init__(self, exc: Exception):
        self.exc = exc
        self.head = io.BytesIO(b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n')

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.head.read(len(buffer))
        if not data:
            raise self.exc
        buffer[: len(data)] = data
        return len(data)


def chunked_post(client, path: str, exc: Exception, headers: dict[str, str]):
    # As gunicorn hands a chunked body over: a stream with no length, read until it ends.
    stream = io.BufferedReader(BrokenChunkedBody(exc))
    return client.post(
        path,
        content_type="multipart/form-data; boundary=XyZ",
        headers={"Transfer-Encoding": "chunked", **headers},
        environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True},
    )


def rows(app) -> int:
    with app.app_context():
        return db.session.query(Prediction).count()


@pytest.mark.parametrize("exc, status, code", BROKEN_BODIES, ids=IDS)
def test_a_broken_chunked_upload_to_the_api_is_a_4xx(app, client, api_token, exc, status, code):
    response = chunked_post(client, "/api/v1/predictions", exc, {"Authorization": f"Bearer {api_token}"})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert rows(app) == 0


@pytest.mark.parametrize("exc, status, words", PAGE_CASES, ids=["chunk size", "trailer size"])
def test_a_broken_chunked_upload_on_the_page_is_a_4xx_page(app, client, auth, clinician_user, exc, status, words):
    auth.login()
    token = csrf_token(client, "/screen")
    response = chunked_post(client, "/screen", exc, {"X-CSRFToken": token})
    assert response.status_code == status
    assert words in response.get_data(as_text=True)
    assert rows(app) == 0


@pytest.mark.parametrize("path", ["/api/v1/predictions", "/screen"])
def test_a_chunked_upload_over_the_limit_is_called_too_large(app, client, api_token, auth, path):
    """Found sending a 3 MB chunked upload to a server with MAX_UPLOAD_MB=2: the 413 said "The upload is
    within the size limit but its form has too many parts", as a chunked body has no Content-Length to
    compare with the limit; the client was sent looking for form fields it never had."""
    app.config["MAX_CONTENT_LENGTH"] = 1000
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + b"x" * 5000
    headers = {"Authorization": f"Bearer {api_token}"}
    if path == "/screen":
        auth.login()
        headers = {"X-CSRFToken": csrf_token(client, "/screen")}
    response = client.post(
        path,
        content_type="multipart/form-data; boundary=XyZ",
        headers={"Transfer-Encoding": "chunked", **headers},
        environ_overrides={"wsgi.input": io.BytesIO(body + b"\r\n--XyZ--\r\n"), "wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    text = response.get_data(as_text=True)
    assert "larger than this server accepts" in text and "too many parts" not in text
    assert rows(app) == 0
