"""How far our upload is from the least any server of this model can do, measured in one run.

    .venv/bin/python -m benchmarks.floor [--rounds 2] [--c1 200] [--c4 800]

Three servers with the same model file and the same gunicorn workers, threads and connections per
worker, started one at a time: our app as `benchmarks.run` starts it, the floor server
(benchmarks/floor_server.py: the app's decode and Analyzer and nothing else) and the naive
reference server. Each round runs them in turn, every other round in reverse order, so a drift in
the machine's speed falls on all three. Each gets the 224x224 JPEG: uploads one at a time (p50),
then four at a time (throughput, p95), with the whole machine's busy CPU counted over the latter
(clients included). Writes benchmarks/results/FLOOR.md: the figures, their ratios to the naive
server, and what the issue-18 goals (12 ms p50, 6x the naive throughput) leave for everything the
floor does not do.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from deploy.gunicorn_hooks import cpu_count

from . import machine
from .client import Target, run_count
from .inputs import latency_inputs
from .report import latency_stats
from .run import API_PATH, DEFAULT_MODEL, NAIVE_PATH, RESULTS, log
from .servers import BenchServer, start_app, start_reference

SERVERS = ("ours", "floor", "naive")
GOAL_P50_MS = 12.0
GOAL_RATIO = 6.0


def _start(name: str, model: Path, settings: dict | None) -> tuple[BenchServer, Target]:
    if name == "ours":
        server = start_app(model)
        return server, Target(server.port, API_PATH, server.token)
    # The floor's TensorFlow threads per worker are ours, as gunicorn.conf.py resolved them.
    env = {"INFERENCE_THREADS": str(settings["inference_threads"])} if name == "floor" else {}
    server = start_reference(name, settings, model, env)
    return server, Target(server.port, NAIVE_PATH)


def measure(name: str, model: Path, settings: dict | None, c1: int, c4: int) -> dict:
    upload = next(u for u in latency_inputs() if u.name == "jpeg_224")
    server, target = _start(name, model, settings)
    try:
        server.wait_ready()
        run_count(target, [upload], 60, 2)  # warm-up: every worker thread has served
        one = run_count(target, [upload], c1, 1)
        busy = machine.busy_cpu_seconds()
        four = run_count(target, [upload], c4, 4)
        cpu_s = machine.busy_cpu_seconds() - busy
        failed = {r.status for r in one.results + four.results} - {200, 201}
        if failed:
            raise RuntimeError(f"{name}: answers with status {sorted(failed)}:\n{server.log_tail(40)}")
        return {
            "p50_c1_ms": latency_stats(one)["p50"],
            "rps_c4": four.throughput,
            "p95_c4_ms": latency_stats(four)["p95"],
            "cpu_ms_per_upload": cpu_s * 1000.0 / len(four.results),
            "gunicorn": server.extra["gunicorn"],
        }
    finally:
        server.stop()


def report(rounds: list[dict[str, dict]], cores: int, other_cpu_s: float, duration_s: float) -> str:
    mean = {
        name: {key: statistics.fmean(r[name][key] for r in rounds) for key in rounds[0][name] if key != "gunicorn"}
        for name in SERVERS
    }
    ours, floor, naive = (mean[name] for name in SERVERS)
    settings = rounds[0]["ours"]["gunicorn"]
    lines = [
        "# Our upload against the floor: decode and the model, nothing else",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cores} cores of "
        f"{machine.describe()['cpu_model']}; {len(rounds)} rounds ({duration_s / 60:.0f} minutes), "
        f"the three servers in turn, every other round reversed; gunicorn {settings['workers']} workers x "
        f"{settings['threads']} threads, "
        f"{settings['worker_connections']} connections per worker, for all three. Other processes used "
        f"{other_cpu_s:.0f} CPU-seconds meanwhile. Reproduce: `python -m benchmarks.floor`.",
        "",
        "- **ours**: the app as `benchmarks.run` measures it (token check, database row, review copy and",
        "  heat-map PNG, request log);",
        "- **floor** (`benchmarks/floor_server.py`): the app's own decode and Analyzer (forward pass,",
        "  Grad-CAM, calibration, UNKNOWN layers, gate) and a JSON answer; nothing stored, nobody checked;",
        "- **naive** (`benchmarks/naive_server.py`): `model.predict` per request, the issue's reference.",
        "",
        "224x224 JPEG; p50 from uploads one at a time, throughput and p95 four at a time; CPU per upload is",
        "the whole machine's busy CPU during the four-at-a-time run (clients included) over its uploads.",
        "",
        "| server | p50, one at a time (ms) | req/s, four at a time | / naive | p95, four at a time (ms) "
        "| machine CPU per upload (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in SERVERS:
        m = mean[name]
        lines.append(
            f"| {name} | {m['p50_c1_ms']:.1f} | {m['rps_c4']:.1f} | {m['rps_c4'] / naive['rps_c4']:.2f}x | "
            f"{m['p95_c4_ms']:.1f} | {m['cpu_ms_per_upload']:.1f} |"
        )
    lines += ["", "Each round (p50 ms / req/s):", "", "| round | " + " | ".join(SERVERS) + " |", "|---|---|---|---|"]
    for index, r in enumerate(rounds, start=1):
        cells = " | ".join(f"{r[n]['p50_c1_ms']:.1f} / {r[n]['rps_c4']:.1f}" for n in SERVERS)
        lines.append(f"| {index} | {cells} |")
    wanted_rps = GOAL_RATIO * naive["rps_c4"]
    cpu_at_goal = cores * 1000.0 / wanted_rps
    lines += [
        "",
        "## What the goals leave above the floor",
        "",
        f"- **p50 at most {GOAL_P50_MS:.0f} ms**: the floor takes {floor['p50_c1_ms']:.1f} ms, which leaves "
        f"{GOAL_P50_MS - floor['p50_c1_ms']:.1f} ms for everything else; ours takes "
        f"{ours['p50_c1_ms'] - floor['p50_c1_ms']:.1f} ms above the floor.",
        f"- **{GOAL_RATIO:.0f}x the naive throughput** = {wanted_rps:.0f} req/s on {cores} cores = at most "
        f"{cpu_at_goal:.1f} ms of machine CPU per upload; the floor uses {floor['cpu_ms_per_upload']:.1f} ms "
        f"({floor['rps_c4'] / naive['rps_c4']:.1f}x the naive server), which leaves "
        f"{cpu_at_goal - floor['cpu_ms_per_upload']:.1f} ms; ours uses "
        f"{ours['cpu_ms_per_upload'] - floor['cpu_ms_per_upload']:.1f} ms above the floor.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Our upload path against the floor and the naive server.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--c1", type=int, default=200, help="uploads one at a time, per server and round")
    parser.add_argument("--c4", type=int, default=800, help="uploads four at a time, per server and round")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS / "FLOOR.md")
    args = parser.parse_args(argv)
    started, busy, own = time.perf_counter(), machine.busy_cpu_seconds(), machine.own_cpu_seconds()
    rounds, settings = [], None
    for index in range(args.rounds):
        figures = {}
        for name in SERVERS if index % 2 == 0 else reversed(SERVERS):
            figures[name] = measure(name, args.model, settings, args.c1, args.c4)
            settings = settings or figures[name]["gunicorn"]
            done = figures[name]
            log(f"round {index + 1} {name}: p50 {done['p50_c1_ms']:.1f} ms, {done['rps_c4']:.1f} req/s")
        rounds.append(figures)
    other = max(0.0, (machine.busy_cpu_seconds() - busy) - (machine.own_cpu_seconds() - own))
    text = report(rounds, cpu_count(), other, time.perf_counter() - started)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
