"""One command for the whole benchmark: `python -m benchmarks.run [--quick]`.

In one run, on loopback ports only:
1. the model alone and each stage of an upload, in a process of its own (benchmarks.model_bench);
2. our app under gunicorn on a fresh SQLite database: time to /readyz, latency per input kind at
   concurrency 1, throughput and latency at concurrency 1, 4 and 16, worker memory from warm-up to
   past 1,000 requests, then the mixed load test (valid, non-chest and broken files) and a count
   of the database rows against the successful answers;
3. the naive reference server (benchmarks/naive_server.py) under the same workload.
The full run writes benchmarks/results/RESULTS.md and benchmark.png (raw JSON under
benchmarks/results/raw/); --quick (CI) runs every step with a handful of requests and writes to
benchmarks/results/raw/quick/. It exits non-zero when the service misbehaves (a 5xx, a connection
error, a wrong status, a missing or extra database row), never because of a timing.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import machine, queue_bench, report
from .client import Run, Target, run_count, run_for
from .inputs import Upload, latency_inputs, load_mix
from .servers import ROOT, BenchServer, start_app, start_reference

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = ROOT / "webapp" / "weights" / "cxr_pneumonia.keras"
CONCURRENCY = (1, 4, 16)
WORKER_COUNTS = (2, 4)  # PSS per worker measured with each
API_PATH = "/api/v1/predictions"
NAIVE_PATH = "/predict"


@dataclass(frozen=True)
class Plan:
    latency_n: dict[str, int]  # requests per input kind at concurrency 1
    sweep_n: dict[int, int]  # requests per concurrency level (224x224 JPEG)
    naive_latency_n: dict[str, int]
    naive_sweep_n: dict[int, int]
    memory_requests: int  # requests after the warm-up sample before the "end" sample
    load_seconds: float
    load_concurrency: int = 16


FULL = Plan(
    latency_n={"jpeg_224": 200, "jpeg_3000": 100, "png16": 50, "dicom": 50},
    # Concurrency 4 is the headline ratio: twice the requests of the other levels, so a few
    # seconds of noise from other jobs on a shared machine weigh less in it.
    sweep_n={1: 150, 4: 600, 16: 400},
    naive_latency_n={"jpeg_224": 60, "jpeg_3000": 40, "png16": 30, "dicom": 30},
    naive_sweep_n={1: 60, 4: 240, 16: 160},
    memory_requests=1000,
    load_seconds=120.0,
)
QUICK = Plan(
    latency_n={"jpeg_224": 6, "jpeg_3000": 3, "png16": 2, "dicom": 2},
    sweep_n={1: 4, 4: 8, 16: 16},
    naive_latency_n={"jpeg_224": 3, "jpeg_3000": 2, "png16": 2, "dicom": 2},
    naive_sweep_n={1: 2, 4: 4, 16: 16},
    memory_requests=0,
    load_seconds=4.0,
)


class Ledger:
    """Every answer our server gave, so the database can be checked against them at the end."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    def add(self, run: Run) -> Run:
        self.runs.append(run)
        return run

    @property
    def requests(self) -> int:
        return sum(len(r.results) for r in self.runs)

    def created_ids(self) -> list[int]:
        return [x.prediction_id for r in self.runs for x in r.results if x.status == 201]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def model_bench(model_path: Path, quick: bool, scratch: Path) -> dict:
    out = scratch / "model.json"
    argv = [sys.executable, "-m", "benchmarks.model_bench", str(out), "--model", str(model_path)]
    done = subprocess.run(argv + (["--quick"] if quick else []), cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"model benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def warm_up(target: Target, uploads: list[Upload], server: BenchServer, ledger: Ledger) -> None:
    """Every worker thread sees every input kind once before anything is measured."""
    slots = server.extra["gunicorn"]["workers"] * server.extra["gunicorn"]["threads"]
    ledger.add(run_count(target, uploads, 2 * slots * len(uploads), slots))


def memory_sample(server: BenchServer, ledger: Ledger, label: str, samples: list, in_verdict: bool = True) -> None:
    samples.append(
        {"label": label, "requests": ledger.requests, "memory_mb": server.worker_memory_mb(), "in_verdict": in_verdict}
    )


def latency_and_sweep(
    target: Target, uploads: list[Upload], per_input: dict[str, int], sweep: dict[int, int], ledger: Ledger
) -> tuple[dict, dict]:
    latency = {}
    for upload in uploads:
        latency[upload.name] = ledger.add(run_count(target, [upload], per_input[upload.name], 1))
        log(f"  {upload.name}: {len(latency[upload.name].results)} requests")
    small = next(u for u in uploads if u.name == "jpeg_224")
    levels = {}
    for concurrency in CONCURRENCY:
        levels[concurrency] = ledger.add(run_count(target, [small], sweep[concurrency], concurrency))
        log(f"  concurrency {concurrency}: {levels[concurrency].throughput:.1f} req/s")
    return latency, levels


def count_rows(database: Path) -> tuple[int, set[int]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        ids = {row[0] for row in connection.execute("SELECT id FROM predictions")}
    return len(ids), ids


def bench_ours(model_path: Path, plan: Plan, uploads: list[Upload]) -> dict:
    ledger, memory = Ledger(), []
    server = start_app(model_path)
    try:
        ready_s = server.wait_ready()
        log(f"app ready in {ready_s:.2f} s ({server.extra['gunicorn']})")
        target = Target(server.port, API_PATH, server.token)
        first = ledger.add(run_count(target, uploads[:1], 1, 1))
        warm_up(target, uploads, server, ledger)
        memory_sample(server, ledger, "after warm-up", memory)
        latency, levels = latency_and_sweep(target, uploads, plan.latency_n, plan.sweep_n, ledger)
        memory_sample(server, ledger, "after latency and concurrency runs", memory)
        top_up = memory[0]["requests"] + plan.memory_requests - ledger.requests
        if top_up > 0:
            ledger.add(run_count(target, uploads[:1], top_up, 4))
            memory_sample(server, ledger, f"{ledger.requests - memory[0]['requests']:,} requests after warm-up", memory)

        mix = load_mix(uploads)
        log(f"load test: {plan.load_seconds:.0f} s at concurrency {plan.load_concurrency}")
        load = ledger.add(run_for(target, mix, plan.load_seconds, plan.load_concurrency))
        # Shown, but not part of the flatness verdict: gunicorn's max_requests may recycle a worker here.
        memory_sample(server, ledger, "after the load test", memory, in_verdict=False)
        rows, row_ids = count_rows(server.database)
        created = ledger.created_ids()
        return {
            "ready_s": ready_s,
            "first_request": first,
            "latency": latency,
            "levels": levels,
            "memory": memory,
            "load": load,
            "load_expect": {u.name: u.expect for u, _ in mix},
            "rows": rows,
            "created": len(created),
            "rows_match": rows == len(created) and row_ids == set(created) and len(set(created)) == len(created),
            "requests": ledger.requests,
            "all_runs": ledger.runs,
            "gunicorn": server.extra["gunicorn"],
        }
    finally:
        server.stop()
        log("app stopped")


def bench_naive(model_path: Path, plan: Plan, uploads: list[Upload], settings: dict) -> dict:
    ledger = Ledger()
    server = start_reference("naive", settings, model_path)
    try:
        ready_s = server.wait_ready()
        log(f"naive server ready in {ready_s:.2f} s")
        target = Target(server.port, NAIVE_PATH)
        first = ledger.add(run_count(target, uploads[:1], 1, 1))
        warm_up(target, uploads, server, ledger)
        latency, levels = latency_and_sweep(target, uploads, plan.naive_latency_n, plan.naive_sweep_n, ledger)
        return {
            "ready_s": ready_s,
            "first_request": first,
            "latency": latency,
            "levels": levels,
            "all_runs": ledger.runs,
        }
    finally:
        server.stop()
        log("naive server stopped")


def bench_workers(model_path: Path, counts: tuple[int, ...], uploads: list[Upload]) -> dict[int, dict]:
    """Each worker's memory after warm-up, with `count` workers (the shared pages split among them)."""
    figures = {}
    for count in counts:
        server = start_app(model_path, {"WEB_WORKERS": str(count)})
        try:
            server.wait_ready()
            warm_up(Target(server.port, API_PATH, server.token), uploads, server, Ledger())
            figures[count] = server.worker_memory_mb()
            log(f"  {count} workers: PSS " + ", ".join(f"{m['pss']:.0f}" for m in figures[count].values()) + " MB")
        finally:
            server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the screening service against a naive server.")
    parser.add_argument("--quick", action="store_true", help="a few requests per step (CI): checks the harness")
    parser.add_argument("--out", type=Path, help="where RESULTS.md and the plot go")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the .keras file both servers use")
    parser.add_argument("--load-seconds", type=float, help="override the load test duration")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.load_seconds:
        plan = Plan(**{**asdict(plan), "load_seconds": args.load_seconds})
    out = args.out or (RESULTS / "raw" / "quick" if args.quick else RESULTS)
    raw = RESULTS / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    busy_before, own_before = machine.busy_cpu_seconds(), machine.own_cpu_seconds()
    host = machine.describe()
    log(f"{host['nproc']} cores, {host['cpu_model']}; competing jobs: {len(host['competing_jobs'])}")
    uploads = latency_inputs()
    log("model alone")
    model = model_bench(args.model, args.quick, raw)
    log(f"model: {model['serving_batch1']['median_ms']:.1f} ms per image (serving call)")
    log("our app")
    ours = bench_ours(args.model, plan, uploads)
    log("naive reference server")
    naive = bench_naive(args.model, plan, uploads, ours["gunicorn"])
    log("the queue: a PACS burst and a validation run")
    queue = queue_bench.measure(args.quick)
    log("memory with 2 and 4 workers")
    workers = bench_workers(args.model, WORKER_COUNTS, uploads[:1])
    host["competing_jobs_at_end"] = machine.competing_jobs()
    host["duration_s"] = time.perf_counter() - started
    # Whatever else ran on the machine meanwhile (other jobs' tests, builds) slowed both servers.
    host["other_cpu_s"] = max(
        0.0, (machine.busy_cpu_seconds() - busy_before) - (machine.own_cpu_seconds() - own_before)
    )

    results = report.build(host, plan, uploads, model, ours, naive, queue, workers, quick=args.quick)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (raw / f"{'quick' if args.quick else 'full'}-{stamp}.json").write_text(json.dumps(results["raw"], indent=1))
    report.write(results, out)
    log(f"results in {out / 'RESULTS.md'}")
    print(results["summary"])
    failures = results["failures"]
    for failure in failures:
        log(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
