"""Where an upload's CPU goes: py-spy samples every gunicorn worker while clients upload films.

    .venv/bin/python -m benchmarks.profile_upload [--seconds 20] [--concurrency 4] [--name after]

Starts the app as benchmarks.run does (gunicorn.conf.py, fresh SQLite), warms it up, then records
each worker with py-spy (100 samples a second: more slows the workers it measures) while
`--concurrency` clients send the 224x224 JPEG. Writes under benchmarks/results/profile/:
- `<name>-worker<N>.svg`: the flame graph of each worker, `<name>-worker<N>.txt` its folded stacks;
- `<name>.md`: the share of samples per stage of the request path (the table in docs/serving.md).
Needs py-spy (requirements-dev.txt) and the right to ptrace the workers (root, or the same user
with kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
from pathlib import Path

from .client import Target, run_count, run_for
from .inputs import latency_inputs
from .servers import ROOT, start_app

OUT = Path(__file__).resolve().parent / "results" / "profile"

# A sample counts for the stage named by its innermost frame that matches a marker (first match in this order).
STAGES = (
    ("model forward pass (TensorFlow)", ("tensorflow", "_pywrap_tfe", "libtensorflow", "onednn", "dnnl")),
    ("decode (JPEG/PNG/DICOM -> pixels)", ("inference/decode.py", "inference/dicom")),
    ("preprocess", ("inference/preprocess.py",)),
    ("review copy and heat map PNGs", ("screening/review_copy.py", "inference/overlay.py")),
    ("decide, calibrate, gate", ("inference/decide.py", "inference/calibrate.py", "inference/intended_use.py")),
    # Includes the commit's wait for the disk (fsync): py-spy cannot tell it from work.
    ("database (SQLAlchemy, SQLite)", ("sqlalchemy", "sqlite3", "flask_sqlalchemy")),
    ("token check and rate limits", ("access.py", "ratelimits.py", "flask_limiter", "limits/")),
    ("answer JSON (marshmallow)", ("marshmallow", "api/schemas.py", "json")),
    ("multipart parsing", ("formparser", "multipart", "webargs")),
    ("request log and audit", ("request_log.py", "audit_log.py", "logging/")),
    ("HTTP server (gunicorn, werkzeug)", ("gunicorn", "werkzeug", "socket", "selectors")),
    ("Flask dispatch and the rest of the app", ("flask", "webapp/")),
)
IDLE = (
    "epoll",
    "select",
    "wait",
    "sleep",
    "futex",
    "accept",
    "acquire",
    "pthread_cond",
    "Condition",
    "_worker (concurrent",  # the review-copy pool with nothing to do
    "MicroBatcher._collect",  # the inference thread waiting for films
)


def record(pid: int, seconds: int, output: Path, fmt: str) -> subprocess.Popen:
    """py-spy on one worker for `seconds`; `fmt` "raw" (folded stacks, summarised below) or "flamegraph" (SVG)."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy")
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100"]
    return subprocess.Popen([*argv, "--format", fmt, "--output", str(output)], stdout=subprocess.DEVNULL)


def without_checkout_path(path: Path) -> None:
    """py-spy writes its own command line, absolute paths included, into the flame graph: the
    committed files name paths relative to the repository instead."""
    path.write_text(path.read_text().replace(f"{ROOT}/", ""))


def stage_of(stack: str) -> str | None:
    """The stage of the innermost frame that names one: the rate limiter wraps the whole view, so the
    frame nearest the leaf says what the CPU was doing."""
    frames = stack.split(";")
    if frames and any(marker in frames[-1] for marker in IDLE):
        return None  # a thread waiting, not working
    for frame in reversed(frames):
        for name, markers in STAGES:
            if any(marker in frame for marker in markers):
                return name
    return "other (Python runtime, native libraries)"


def summarise(raw_files: list[Path]) -> collections.Counter:
    shares: collections.Counter = collections.Counter()
    for raw in raw_files:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            stage = stage_of(stack)
            if stage is not None and count.isdigit():
                shares[stage] += int(count)
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--name", default="profile")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    small = next(u for u in latency_inputs() if u.name == "jpeg_224")
    server = start_app()
    try:
        server.wait_ready()
        target = Target(server.port, "/api/v1/predictions", server.token)
        run_count(target, [small], 200, args.concurrency)  # warm-up: every thread and code path once
        pids = server.worker_pids()
        # Two recorders on one process would each stop it per sample: the folded stacks (the table)
        # first, then the flame graphs, each under the same steady load.
        loads = []
        for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
            recorders = [
                record(pid, args.seconds, OUT / f"{args.name}-worker{i}.{suffix}", fmt) for i, pid in enumerate(pids)
            ]
            loads.append(run_for(target, [(small, 1)], args.seconds + 2, args.concurrency))
            for recorder in recorders:
                recorder.wait()
            for i in range(len(pids)):
                without_checkout_path(OUT / f"{args.name}-worker{i}.{suffix}")
        load = loads[0]
    finally:
        server.stop()
    shares = summarise([OUT / f"{args.name}-worker{i}.txt" for i in range(len(pids))])
    total = sum(shares.values()) or 1
    ok = sum(1 for r in load.results if r.status == 201)
    lines = [
        f"# Profile `{args.name}`: {ok} uploads of the 224x224 JPEG at concurrency {args.concurrency}, "
        f"{load.throughput:.1f} req/s under py-spy ({len(pids)} workers)",
        "",
        "| stage | share of busy samples |",
        "|---|---:|",
        *(f"| {stage} | {count / total:.1%} |" for stage, count in shares.most_common()),
    ]
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
