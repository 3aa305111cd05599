"""Checks of a running deployment, as a browser and an API client would use it (standard library only).

Run on the host against the proxy, or inside an app container (`podman exec -i CONTAINER python -
CHECK ... < scripts/stack_checks.py`) to reach each replica directly on the compose network:

    python scripts/stack_checks.py journey --base https://127.0.0.1:8443 --cafile ca.pem \
        --user dr.smoke --password ... --film film.jpeg
    python - session-across-replicas --first http://app:8000 --second http://app2:8000 --user ... --password ...
    python - rate-limit-across-replicas --first http://app:8000 --second http://app2:8000 --token ... --limit 300

Each check is one function taking the parsed arguments; a failed expectation raises CheckFailed and
the command exits 1 with the reason. scripts/container_stack.sh runs them.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import ssl
import statistics
import sys
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode, urljoin
from urllib.request import HTTPRedirectHandler, HTTPSHandler, Request, build_opener

VERDICTS = ("NORMAL", "PNEUMONIA", "UNKNOWN")


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    cookies: list[str]  # raw Set-Cookie values
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # every redirect is looked at by the check itself


@dataclass
class Client:
    """One browser: a base URL and the cookies it was given (kept by name, sent on every request).

    Cookies are kept by hand because the session cookie is `Secure`: a standard cookie jar would
    not send it back to a replica addressed over plain http on the compose network.
    """

    base: str
    cafile: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_headers: list[str] = field(default_factory=list)  # every Set-Cookie received, as sent
    # The page a form was taken from: sent as Referer with the POST, as a browser does (Flask-WTF
    # refuses a form posted over HTTPS without a same-site Referer).
    page_url: str | None = None

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None) -> Response:
        context = ssl.create_default_context(cafile=self.cafile) if self.cafile else None
        opener = build_opener(_NoRedirect, HTTPSHandler(context=context))
        url = urljoin(self.base, path)
        request = Request(url, data=data, method=method, headers=dict(headers or {}))
        if method == "POST" and self.page_url:
            request.add_header("Referer", self.page_url)
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            with opener.open(request, timeout=120) as raw:
                response = Response(
                    raw.status, dict(raw.headers.items()), raw.headers.get_all("Set-Cookie") or [], raw.read()
                )
        except HTTPError as error:  # 3xx (not followed) and 4xx/5xx: a response to look at
            response = Response(
                error.code, dict(error.headers.items()), error.headers.get_all("Set-Cookie") or [], error.read()
            )
        self.set_cookie_headers += response.cookies
        if method == "GET":
            self.page_url = url
        for cookie in response.cookies:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return response

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post_form(self, path: str, fields: dict[str, str]) -> Response:
        return self.request(
            "POST", path, urlencode(fields).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def post_files(
        self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes]], headers: dict | None = None
    ) -> Response:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        for name, filename, content in files:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(
            "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
        )


def csrf_token(page: Response) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    expect(match is not None, f"no CSRF token in the page (status {page.status})")
    return match.group(1)


def sign_in(client: Client, user: str, password: str) -> Response:
    """The sign-in form as a browser finds and submits it; returns the page the browser lands on."""
    wall = client.get("/screen")
    expect(wall.status == 302, f"GET /screen without a session answered {wall.status}, not a redirect")
    login_url = wall.headers["Location"]
    page = client.get(login_url)
    expect(page.status == 200, f"GET {login_url} answered {page.status}")
    done = client.post_form(login_url, {"csrf_token": csrf_token(page), "username": user, "password": password})
    expect(done.status in (302, 303), f"sign-in as {user} answered {done.status}, not a redirect")
    landing = client.get(done.headers["Location"])
    expect(landing.status == 200, f"the page after sign-in answered {landing.status}")
    return landing


def check_journey(args) -> str:
    """Through the proxy over HTTPS: sign in, upload a film on the upload page, see its result."""
    client = Client(args.base, args.cafile)
    landing = sign_in(client, args.user, args.password)
    hsts = landing.headers.get("Strict-Transport-Security", "")
    expect(hsts.startswith("max-age="), f"no HSTS header over HTTPS (got {hsts!r})")
    # Every cookie that carries a value (a deletion, `name=; Max-Age=0`, carries none) is Secure.
    cookies = [c for c in client.set_cookie_headers if c.split(";", 1)[0].partition("=")[2]]
    expect(bool(cookies) and all("; Secure" in c for c in cookies), f"cookies not all Secure over HTTPS: {cookies}")
    upload_page = client.get("/screen")
    expect(upload_page.status == 200, f"GET /screen answered {upload_page.status}")
    film = Path(args.film)
    posted = client.post_files(
        "/screen", {"csrf_token": csrf_token(upload_page)}, [("files", film.name, film.read_bytes())]
    )
    expect(posted.status == 303, f"upload answered {posted.status}: {posted.text[:300]}")
    location = posted.headers["Location"]
    match = re.search(r"[?&]id=(\d+)", location)
    expect(match is not None, f"upload redirected to {location}, not to a result")
    prediction_id = match.group(1)
    result = client.get(location)
    expect(result.status == 200, f"GET {location} answered {result.status}")
    verdict = re.search(r'data-label="(' + "|".join(VERDICTS) + ')"', result.text)
    expect(verdict is not None, "the result page shows no verdict")
    for image in ("image.png", "heatmap.png"):
        png = client.get(f"/predictions/{prediction_id}/{image}")
        expect(png.status == 200 and png.body.startswith(b"\x89PNG"), f"{image} answered {png.status}")
    return (
        f"signed in, uploaded {film.name}, verdict {verdict.group(1)} (prediction {prediction_id}), "
        f"review image and heat map served; HSTS {hsts}; {len(cookies)} cookies set, all Secure"
    )


def check_session_across_replicas(args) -> str:
    """A session made by one replica is honoured by the other (shared SECRET_KEY and database)."""
    first = Client(args.first)
    sign_in(first, args.user, args.password)
    stranger = Client(args.second).get("/screen")
    expect(
        stranger.status == 302 and "/login" in stranger.headers.get("Location", ""),
        f"{args.second} served /screen without a session ({stranger.status})",
    )
    second = Client(args.second, cookies=dict(first.cookies))
    page = second.get("/screen")
    expect(
        page.status == 200 and 'name="csrf_token"' in page.text,
        f"{args.second} did not accept the session from {args.first} ({page.status})",
    )
    return f"signed in on {args.first}; {args.second} accepted that session"


def check_rate_limit_across_replicas(args) -> str:
    """One API token's calls, alternating between the replicas, meet one limit: the count is kept in
    Redis, so each replica refuses once both together reach it (`--limit`, the stack's per-minute
    API_RATE_LIMIT). Counted apart, each would serve `--limit` calls before its first refusal."""
    clients, served = (Client(args.first), Client(args.second)), [0, 0]
    headers = {"Authorization": f"Bearer {args.token}"}
    for call in range(2 * args.limit + 2):
        replica = call % 2
        answer = clients[replica].request("GET", "/api/v1/tokens", headers=headers)
        if answer.status == 429:
            break
        expect(answer.status == 200, f"API call {call} answered {answer.status}: {answer.text[:200]}")
        served[replica] += 1
    else:
        raise CheckFailed(f"no 429 after {sum(served)} calls; the limit is {args.limit}")
    other = clients[1 - replica].request("GET", "/api/v1/tokens", headers=headers)
    expect(other.status == 429, f"the other replica still answered {other.status} after the first refusal")
    expect(
        sum(served) <= args.limit and max(served) < args.limit,
        f"{served[0]} + {served[1]} calls served before the first 429, limit {args.limit}: not one shared count",
    )
    return (
        f"{served[0]} calls through {args.first} and {served[1]} through {args.second} served, then both "
        f"answered 429: one count of {args.limit} a minute across the replicas"
    )


def check_queued_job_across_replicas(args) -> str:
    """A validation run posted to one replica is taken from the Redis queue by the worker container
    and reported done by the other replica."""
    film = Path(args.film).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for label in ("NORMAL", "PNEUMONIA"):
            zipped.writestr(f"{label}/film.jpeg", film)
    headers = {"Authorization": f"Bearer {args.token}"}
    started = time.perf_counter()
    posted = Client(args.first).post_files(
        "/api/v1/validation-runs", {}, [("archive", "site.zip", archive.getvalue())], headers
    )
    expect(
        posted.status == 202,
        f"POST /api/v1/validation-runs on {args.first} answered {posted.status}: {posted.text[:300]}",
    )
    run_id = json.loads(posted.body)["id"]
    second = Client(args.second)
    while True:
        run = json.loads(second.request("GET", f"/api/v1/validation-runs/{run_id}", headers=headers).body)
        if run["status"] in ("done", "failed") or time.perf_counter() - started > 180:
            break
        time.sleep(0.5)
    expect(run["status"] == "done", f"validation run {run_id} is {run['status']} on {args.second}: {run.get('error')}")
    expect(run["progress"]["done"] == 2, f"validation run {run_id} processed {run['progress']}, not 2 films")
    return (
        f"validation run {run_id} posted to {args.first}, screened by the worker from Redis, done on "
        f"{args.second} after {time.perf_counter() - started:.1f} s"
    )


def measure_films_per_hour(args) -> str:
    """API uploads of one film each, `--concurrency` at a time, through the proxy: films per hour."""
    film = Path(args.film)
    content = film.read_bytes()

    def upload(_: int) -> tuple[float, str]:
        client = Client(args.base, args.cafile)
        started = time.perf_counter()
        answer = client.post_files(
            "/api/v1/predictions", {}, [("file", film.name, content)], {"Authorization": f"Bearer {args.token}"}
        )
        expect(answer.status == 201, f"API upload answered {answer.status}: {answer.text[:300]}")
        request_id = {k.lower(): v for k, v in answer.headers.items()}.get("x-request-id", "?")
        return time.perf_counter() - started, request_id

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        uploads = sorted(pool.map(upload, range(args.requests)))
    elapsed = time.perf_counter() - started
    latencies = [latency for latency, _ in uploads]
    # The slowest upload's request id (the proxy's, echoed by the app): container_stack.sh looks
    # it up in the proxy's and the replicas' logs, which say where its time went.
    return (
        f"{args.requests} API uploads, {args.concurrency} at a time: {args.requests / elapsed * 3600:.0f} films "
        f"per hour, median latency {statistics.median(latencies) * 1000:.0f} ms, slowest {latencies[-1] * 1000:.0f} ms "
        f"(request {uploads[-1][1]})"
    )


def check_refusals(args) -> str:
    """Through the proxy over HTTP/1.1: what the proxy or gunicorn refuses before the app sees it
    answers in the API's error body, as the app's own refusals do (docs/api.md, "Endpoints")."""
    client = Client(args.base, args.cafile)
    query, tokens, upload = "/api/v1/predictions?q=", "/api/v1/tokens", "/api/v1/predictions"
    many_fields = {f"X-Field-{i}": "y" for i in range(150)}
    octets = {"Content-Type": "application/octet-stream"}
    cases = [  # (what, refused by, status, code, method, path, body, headers)
        ("a 5 KB request line", "gunicorn", 414, "uri_too_long", "GET", query + "x" * 5000, None, {}),
        ("a 9 KB request line", "proxy", 414, "uri_too_long", "GET", query + "x" * 9000, None, {}),
        ("150 header fields", "gunicorn", 431, "headers_too_large", "GET", tokens, None, many_fields),
        ("a 9 KB header", "proxy", 431, "headers_too_large", "GET", tokens, None, {"X-Big": "y" * 9000}),
        ("a 51 MB body", "proxy", 413, "too_large", "POST", upload, bytes(51 << 20), octets),
    ]
    for what, _by, status, code, method, path, body, headers in cases:
        answer = client.request(method, path, body, headers)
        kind = answer.headers.get("Content-Type", "")
        expect(answer.status == status, f"{what}: answered {answer.status}, not {status}: {answer.text[:200]}")
        expect(kind == "application/json", f"{what}: answered {kind!r}, not the error body: {answer.text[:200]}")
        expect(json.loads(answer.body)["error"]["code"] == code, f"{what}: {answer.text[:200]}")
    refused = ", ".join(f"{what} ({by}, {status})" for what, by, status, *_ in cases)
    # A validation archive may be far larger than a film (docs/validation.md): the proxy passes it on,
    # and here the app answers it (no token).
    archive = client.request("POST", "/api/v1/validation-runs", bytes(60 << 20), octets)
    expect(archive.status == 401, f"a 60 MB validation archive: answered {archive.status}, not the app's 401")
    return f"refused before the app, each in the API's error body: {refused}; a 60 MB archive passed to the app"


CHECKS = {
    "journey": check_journey,
    "refusals": check_refusals,
    "session-across-replicas": check_session_across_replicas,
    "rate-limit-across-replicas": check_rate_limit_across_replicas,
    "queued-job-across-replicas": check_queued_job_across_replicas,
    "films-per-hour": measure_films_per_hour,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--base", help="URL of the proxy (journey)")
    parser.add_argument("--cafile", help="CA certificate to trust for --base")
    parser.add_argument("--first", help="URL of one replica (across-replica checks)")
    parser.add_argument("--second", help="URL of another replica")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--token", help="API token (films-per-hour, the across-replica API checks)")
    parser.add_argument("--film", help="a radiograph to upload (journey, films-per-hour, queued job)")
    parser.add_argument("--limit", type=int, help="the per-minute API limit (rate-limit-across-replicas)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        summary = CHECKS[args.check](args)
    except CheckFailed as failure:
        print(json.dumps({"check": args.check, "ok": False, "reason": str(failure)}))
        return 1
    print(json.dumps({"check": args.check, "ok": True, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
