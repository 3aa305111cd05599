"""Fuzz the JSON API against its own OpenAPI document with Schemathesis, on the live app.

* the real app under gunicorn.conf.py (2 workers, the shipped model) on a loopback port, with a
  throwaway SQLite database and an administrator's token (so every operation can answer 2xx);
* a few real radiographs uploaded first, so that reads find predictions to serialise;
* the document fetched from /api/v1/openapi.json and validated (openapi-spec-validator);
* `schemathesis run --checks all` over every operation, configured by schemathesis.toml
  (at least 60 examples per operation and phase, positive and negative inputs);
* then the server's own request log: any 5xx answer fails the check, whatever Schemathesis saw.

  .venv/bin/python scripts/check_api_contract.py            # prints a report; exit 1 on failure
  .venv/bin/python scripts/check_api_contract.py --seed 42  # replay one run
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from openapi_spec_validator import validate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.live_app import ROOT, LiveApp  # noqa: E402  (needs the repository on sys.path)

READY_LINE = "worker ready"
IMAGES = [ROOT / "tests" / "fixtures" / "images" / name for name in ("normal.jpeg", "pneumonia.jpeg")]


def seed_predictions(url: str, token: str) -> None:
    """Real uploads (one batch with every fixture image), so reads have rows to return."""
    files = [("file", (path.name, path.read_bytes(), "image/jpeg")) for path in IMAGES]
    response = requests.post(
        f"{url}/api/v1/predictions", files=files, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    if response.status_code != 201:
        raise RuntimeError(f"seeding uploads answered {response.status_code}: {response.text[:500]}")


def fetch_document(url: str, token: str, path: Path) -> dict:
    response = requests.get(f"{url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    document = response.json()
    validate(document)
    path.write_text(json.dumps(document, indent=1))
    return document


def logged_requests(log_text: str) -> list[dict]:
    """Every request the app logged (webapp.request_log writes one JSON line each)."""
    return [json.loads(line) for line in log_text.splitlines() if line.startswith("{") and '"event": "request"' in line]


def operation_of(record: dict, operations: list[str]) -> str:
    """The documented operation a logged request was aimed at, else `METHOD (undeclared)`."""
    path = record["path"].removeprefix("/api/v1")
    for operation in operations:
        method, template = operation.split(" ", 1)
        shape = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))  # {run_id}: one path segment
        if re.fullmatch(shape, path) and record["method"] == method:
            return operation
    return f"{record['method']} (undeclared method or path)"


def cases_generated(report_dir: Path) -> dict[str, collections.Counter]:
    """Test cases Schemathesis generated, per operation and phase, from its NDJSON event report."""
    cases: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for report in report_dir.glob("ndjson-*.ndjson"):
        for line in report.read_text().splitlines():
            event = json.loads(line).get("ScenarioFinished")
            if event:
                cases[event["recorder"]["label"]][event["phase"]] += len(event["recorder"].get("cases", {}))
    return cases


def run_schemathesis(document_path: Path, base_url: str, token: str, report_dir: Path, args) -> int:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        str(document_path),
        "--url",
        base_url,
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "CXR_API_TOKEN": token}).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=60, help="per operation and phase (default 60)")
    # One worker: with several, Hypothesis' concurrent ast.parse calls trip a CPython 3.11 bug
    # ("SystemError: AST constructor recursion depth mismatch") inside Schemathesis itself.
    parser.add_argument("--workers", type=int, default=1, help="concurrent Schemathesis workers (default 1)")
    parser.add_argument("--seed", type=int, help="replay a run (Schemathesis prints its seed)")
    parser.add_argument(
        "--database-url",
        help="an empty database for the server instead of a throwaway SQLite file "
        "(CI: PostgreSQL from scripts/with_postgres.sh, whose integer limits differ)",
    )
    args = parser.parse_args()

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cxr-contract-"))
    database = {"DATABASE_URL": args.database_url} if args.database_url else {}
    # Rate limits off: thousands of generated requests from one token would mostly meet 429s.
    with LiveApp("contract", env={"WEB_WORKERS": "2", "RATE_LIMITS_ENABLED": "false", **database}) as server:
        token = server.prepare("contract-admin", role="admin")
        server.start()
        server.wait_for_log(READY_LINE, 2, timeout=240)
        seed_predictions(server.url, token)
        document = fetch_document(server.url, token, work / "openapi.json")
        operations = [
            f"{method.upper()} {path}"
            for path, item in document["paths"].items()
            for method in item
            if method != "parameters"
        ]
        backend = args.database_url.split(":", 1)[0] if args.database_url else "sqlite (throwaway file)"
        print(f"database: {backend}")
        print(f"document valid (OpenAPI {document['openapi']}); {len(operations)} operations: {', '.join(operations)}")
        returncode = run_schemathesis(work / "openapi.json", f"{server.url}/api/v1", token, work, args)
        records = logged_requests(server.log_text())

    print("\ntest cases generated, per operation and phase:")
    for operation, phases in sorted(cases_generated(work).items()):
        print(f"  {operation}: {sum(phases.values())} {dict(sorted(phases.items()))}")
    statuses = collections.Counter(record["status"] for record in records)
    errors = {status: n for status, n in statuses.items() if status >= 500}
    print(f"\nserver answered {len(records)} requests: {dict(sorted(statuses.items()))}")
    per_operation = collections.defaultdict(collections.Counter)
    for record in records:
        per_operation[operation_of(record, operations)][record["status"]] += 1
    for operation, counts in sorted(per_operation.items()):
        print(f"  {operation}: {sum(counts.values())} requests {dict(sorted(counts.items()))}")
    print(f"contract check took {time.monotonic() - started:.0f} s")
    if errors or returncode:
        # The reports (JUnit, NDJSON with every case and answer) and the document stay for the post-mortem.
        print(f"FAIL: server errors {errors}, schemathesis exit {returncode}; reports in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work)
    print("PASS: zero Schemathesis failures, no 5xx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
