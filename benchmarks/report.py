"""Turn one benchmark run into figures, target verdicts, RESULTS.md and benchmark.png."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .client import Run

RSS_LIMIT_MB = 700.0
RSS_FLAT_TOLERANCE = 0.05  # growth from the warm-up sample to the last sample, as a fraction
PLOT_NAME = "benchmark.png"


def latency_stats(run: Run) -> dict:
    ok = [r.latency_s * 1000.0 for r in run.results if 0 < r.status < 300]
    if not ok:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "rps": 0.0}
    p50, p95, p99 = np.percentile(ok, [50, 95, 99])
    return {
        "n": len(ok),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(np.mean(ok)),
        "rps": run.throughput,
        "samples_ms": ok,
    }


def _bad_answers(runs: list[Run], good: int) -> Counter:
    return Counter((r.upload, r.status) for run in runs for r in run.results if r.status != good)


def memory_verdict(samples: list[dict]) -> dict:
    """Per worker pid: RSS after warm-up against the last sample of the verdict (the one after
    1,000 requests); workers gone by then (recycled) are listed."""
    judged = [s for s in samples if s.get("in_verdict", True)]
    first, last = judged[0]["memory_mb"], judged[-1]["memory_mb"]
    peak = max((m["rss"] for s in samples for m in s["memory_mb"].values()), default=float("nan"))
    peak_uss = max((m["uss"] for s in samples for m in s["memory_mb"].values()), default=float("nan"))
    growth = {pid: (last[pid]["rss"] - first[pid]["rss"]) / first[pid]["rss"] for pid in first if pid in last}
    return {
        "peak_mb": peak,
        "peak_uss_mb": peak_uss,
        "growth": growth,
        "recycled": sorted(set(first) - set(last)),
        "flat": bool(growth) and all(g <= RSS_FLAT_TOLERANCE for g in growth.values()),
    }


def load_table(load: Run, expect: dict[str, str]) -> list[dict]:
    rows = []
    for name, expected in expect.items():
        results = [r for r in load.results if r.upload == name]
        statuses = Counter(r.status for r in results)
        rows.append(
            {
                "upload": name,
                "expect": expected,
                "sent": len(results),
                "ok": sum(n for s, n in statuses.items() if 200 <= s < 300),
                "client_error": sum(n for s, n in statuses.items() if 400 <= s < 500),
                "server_error": sum(n for s, n in statuses.items() if s >= 500),
                "connection_error": statuses.get(0, 0),
                "unknown": sum(1 for r in results if r.label == "UNKNOWN"),
                "p50": latency_stats(Run(results, load.wall_s))["p50"],
            }
        )
    return rows


def functional_failures(ours: dict, naive: dict, load_rows: list[dict]) -> list[str]:
    failures = []
    measured = [r for r in ours["all_runs"] if r is not ours["load"]]
    for (upload, status), n in sorted(_bad_answers(measured, 201).items()):
        failures.append(f"our app answered {status or 'a connection error'} to {n} valid {upload} upload(s)")
    for (upload, status), n in sorted(_bad_answers(naive["all_runs"], 200).items()):
        failures.append(f"the naive server answered {status or 'a connection error'} to {n} {upload} upload(s)")
    for row in load_rows:
        if row["server_error"] or row["connection_error"]:
            failures.append(
                f"load test: {row['server_error']} 5xx and {row['connection_error']} connection "
                f"errors for {row['upload']}"
            )
        wrong = row["client_error"] if row["expect"] != "refused" else row["ok"]
        if wrong:
            failures.append(
                f"load test: {wrong} {row['upload']} upload(s) got the wrong kind of answer "
                f"(expected {'a 4xx' if row['expect'] == 'refused' else 'a verdict'})"
            )
    if not ours["rows_match"]:
        failures.append(f"database holds {ours['rows']} prediction rows for {ours['created']} successful answers")
    return failures


def targets(
    ours_lat: dict,
    naive_levels: dict,
    ours_levels: dict,
    ours: dict,
    memory: dict,
    load_rows: list[dict],
    queue: dict,
) -> list[dict]:
    ratio_c4 = ours_levels[4]["rps"] / naive_levels[4]["rps"] if naive_levels[4]["rps"] else float("nan")
    size_ratio = ours_lat["jpeg_3000"]["p50"] / ours_lat["jpeg_224"]["p50"]
    load_clean = ours["rows_match"] and not any(r["server_error"] or r["connection_error"] for r in load_rows)
    rss_text = (
        f"peak RSS {memory['peak_mb']:.0f} MB (private {memory['peak_uss_mb']:.0f} MB), growth "
        + ", ".join(f"{g * 100:+.1f}%" for g in memory["growth"].values())
        if memory["growth"]
        else "no worker kept its pid"
    )
    return [
        {
            "target": "224x224 JPEG p50, end to end, concurrency 1",
            "goal": "<= 12 ms",
            "measured": f"{ours_lat['jpeg_224']['p50']:.1f} ms",
            "met": ours_lat["jpeg_224"]["p50"] <= 12,
        },
        {
            "target": "throughput at concurrency 4, ours / naive",
            "goal": ">= 6x",
            "measured": f"{ratio_c4:.1f}x",
            "met": ratio_c4 >= 6,
        },
        {
            "target": "p95 at concurrency 4 (224x224 JPEG)",
            "goal": "<= 60 ms",
            "measured": f"{ours_levels[4]['p95']:.1f} ms",
            "met": ours_levels[4]["p95"] <= 60,
        },
        {
            "target": "3000x3000 JPEG p50, end to end",
            "goal": "<= 30 ms",
            "measured": f"{ours_lat['jpeg_3000']['p50']:.1f} ms",
            "met": ours_lat["jpeg_3000"]["p50"] <= 30,
        },
        {
            "target": f"validation run of the {queue['validation']['films']} official test films",
            "goal": "< 20 s",
            "measured": f"{queue['validation']['total_s']:.1f} s",
            "met": queue["validation"]["total_s"] < 20,
        },
        {
            "target": f"burst of {queue['burst']['films']} films from the PACS through the queue",
            "goal": ">= 60 films/s",
            "measured": f"{queue['burst']['films_per_s']:.1f} films/s",
            "met": queue["burst"]["films_per_s"] >= 60,
        },
        {
            "target": "3000x3000 / 224x224 JPEG p50 (issue 4)",
            "goal": "< 3x",
            "measured": f"{size_ratio:.2f}x",
            "met": size_ratio < 3,
        },
        {
            "target": "process start to /readyz 200",
            "goal": "<= 10 s",
            "measured": f"{ours['ready_s']:.2f} s",
            "met": ours["ready_s"] <= 10,
        },
        {
            "target": "RSS per worker, flat after warm-up",
            "goal": f"<= {RSS_LIMIT_MB:.0f} MB, growth <= {RSS_FLAT_TOLERANCE * 100:.0f}%",
            "measured": rss_text,
            "met": memory["peak_mb"] <= RSS_LIMIT_MB and memory["flat"],
        },
        {
            "target": "load test: 0 5xx, 0 connection errors, 1 row per success",
            "goal": "clean",
            "measured": f"{sum(r['server_error'] for r in load_rows)} 5xx, "
            f"{sum(r['connection_error'] for r in load_rows)} connection errors, "
            f"{ours['rows']} rows / {ours['created']} successes",
            "met": load_clean,
        },
    ]


def build(
    host: dict, plan, uploads, model: dict, ours: dict, naive: dict, queue: dict, workers: dict, quick: bool
) -> dict:
    ours_lat = {name: latency_stats(run) for name, run in ours["latency"].items()}
    naive_lat = {name: latency_stats(run) for name, run in naive["latency"].items()}
    ours_levels = {c: latency_stats(run) for c, run in ours["levels"].items()}
    naive_levels = {c: latency_stats(run) for c, run in naive["levels"].items()}
    memory = memory_verdict(ours["memory"])
    load_rows = load_table(ours["load"], ours["load_expect"])
    figures = {
        "host": host,
        "quick": quick,
        "plan": plan.__dict__,
        "model": model,
        "inputs": {u.name: {"description": u.description, "bytes": len(u.data)} for u in uploads},
        "ours": {
            "ready_s": ours["ready_s"],
            "first_request_ms": latency_stats(ours["first_request"])["p50"],
            "latency": ours_lat,
            "levels": ours_levels,
            "memory": ours["memory"],
            "memory_verdict": memory,
            "load": {
                "seconds": ours["load"].wall_s,
                "requests": len(ours["load"].results),
                "rps": ours["load"].throughput,
                "rows": load_rows,
                "concurrency": plan.load_concurrency,
            },
            "db_rows": ours["rows"],
            "successes": ours["created"],
            "requests": ours["requests"],
            "gunicorn": ours["gunicorn"],
        },
        "naive": {
            "ready_s": naive["ready_s"],
            "first_request_ms": latency_stats(naive["first_request"])["p50"],
            "latency": naive_lat,
            "levels": naive_levels,
        },
        "queue": queue,
        "workers": workers,
    }
    figures["targets"] = targets(ours_lat, naive_levels, ours_levels, ours, memory, load_rows, queue)
    failures = functional_failures(ours, naive, load_rows)
    raw = _jsonable(figures)
    return {"figures": figures, "raw": raw, "failures": failures, "summary": _summary(figures, failures)}


def _jsonable(value):
    """The figures as JSON-ready values, keys as strings (pids, concurrency levels)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _summary(figures: dict, failures: list[str]) -> str:
    lines = [
        f"{'met ' if t['met'] else 'MISS'}  {t['target']}: {t['measured']} (goal {t['goal']})"
        for t in figures["targets"]
    ]
    lines.append(f"functional checks: {'all passed' if not failures else f'{len(failures)} FAILED'}")
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    from .plots import plot

    figures = results["figures"]
    plot(figures, out / PLOT_NAME)
    (out / "RESULTS.md").write_text(markdown(figures, results["failures"]))


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def markdown(f: dict, failures: list[str]) -> str:
    host, model, ours, naive = f["host"], f["model"], f["ours"], f["naive"]
    g = ours["gunicorn"]
    out = ["# Benchmark results", ""]
    if f["quick"]:
        out += [
            "> **Quick run** (a handful of requests per step, made to check the harness): "
            "the figures are not meaningful.",
            "",
        ]
    out += [
        f"Measured {host['date_utc']} on {host['nproc']} cores of an {host['cpu_model']}, "
        f"{host['memory_gb']:.0f} GB RAM, Linux {host['kernel']}, Python {host['python']}; "
        f"gunicorn {g['workers']} workers x {g['threads']} threads (gthread, "
        f"{g['worker_connections']} connections per worker); model "
        f"`{model['model_version']}` ({model['parameters']:,} parameters, {model['input_size']}x"
        f"{model['input_size']} input). Load average at the start: "
        + ", ".join(f"{x:.2f}" for x in host["load_average"])
        + ".",
        "",
    ]
    capacity = host["duration_s"] * host["nproc"]
    out += [
        f"Other processes on the machine used {host['other_cpu_s']:.0f} CPU-seconds of the "
        f"{capacity:.0f} available during the run ({host['other_cpu_s'] / capacity * 100:.0f}%; "
        "the benchmark's own client, servers and model process are not counted).",
        "",
    ]
    busy = host["competing_jobs"] or host.get("competing_jobs_at_end")
    if busy:
        out += [
            "> **A model training or evaluation job shared the CPU during this run** "
            f"(`{(host['competing_jobs'] or host['competing_jobs_at_end'])[0][:80]}`): every timing "
            "below is slower than on an idle machine, for both servers alike.",
            "",
        ]
    out += [
        f"Reproduce: `python -m benchmarks.run{' --quick' if f['quick'] else ''}` (this run took "
        f"{host['duration_s'] / 60:.0f} minutes). Every figure below comes from that one run; the naive reference server is "
        "`benchmarks/naive_server.py` (same model file, `model.predict` per request, full decode, "
        "no warm-up), served by gunicorn with the same workers, threads and connections per worker.",
        "",
    ]

    out += ["## Targets", "", "| target | goal | measured | |", "|---|---|---|---|"]
    out += [
        f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else '**missed**'} |"
        for t in f["targets"]
    ]
    out += [
        "",
        "Functional checks (statuses, database rows): "
        + ("all passed." if not failures else "**failed**: " + "; ".join(failures)),
        "",
    ]

    out += [
        "## End-to-end latency at concurrency 1",
        "",
        "`POST /api/v1/predictions`, one file per request, a new connection each time, timed by the "
        "client from connect to the last byte of the answer (includes the upload, authentication, "
        "decoding, the model, Grad-CAM, both stored PNGs and the database commit).",
        "",
        "| input | bytes | ours p50 / p95 / p99 (ms) | naive p50 / p95 / p99 (ms) | naive / ours (p50) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, info in f["inputs"].items():
        o, n = ours["latency"][name], naive["latency"][name]
        out.append(
            f"| {info['description']} | {info['bytes']:,} | {_ms(o['p50'])} / {_ms(o['p95'])} / "
            f"{_ms(o['p99'])} | {_ms(n['p50'])} / {_ms(n['p95'])} / {_ms(n['p99'])} | "
            f"{n['p50'] / o['p50']:.1f}x |"
        )
    out += [
        "",
        "## Throughput against concurrency (224x224 JPEG)",
        "",
        "| concurrency | ours req/s | ours p50 / p95 / p99 (ms) | naive req/s | naive p50 / p95 / p99 (ms) "
        "| ours / naive (req/s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c, o in ours["levels"].items():
        n = naive["levels"][c]
        out.append(
            f"| {c} | {o['rps']:.1f} | {_ms(o['p50'])} / {_ms(o['p95'])} / {_ms(o['p99'])} | "
            f"{n['rps']:.1f} | {_ms(n['p50'])} / {_ms(n['p95'])} / {_ms(n['p99'])} | "
            f"{o['rps'] / n['rps']:.1f}x |"
        )
    out += ["", f"![latency distributions, throughput and worker memory]({PLOT_NAME})", ""]

    out += [
        "## Where the time of one upload goes",
        "",
        "Each stage of `webapp.screening.service.screen_upload`, timed in-process (median ms); the rest of "
        "the end-to-end p50 is HTTP, the multipart parse, token check, sha256 and the database commit.",
        "",
        "| input | decode | analyze (model + Grad-CAM) | review PNG | heat-map PNG (stored map) | sum | end-to-end p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, stages in model["stages"].items():
        parts = [stages[k]["median_ms"] for k in ("decode", "analyze", "review_png", "heatmap_png")]
        out.append(
            f"| {f['inputs'][name]['description']} | "
            + " | ".join(f"{p:.1f}" for p in parts)
            + f" | {sum(parts):.1f} | {_ms(ours['latency'][name]['p50'])} |"
        )

    batch = model["batch"]
    fb = model[f"forward_batch{batch}"]
    out += [
        "",
        "## The model alone",
        "",
        f"TensorFlow in one process using all {model['tf_threads']['cpus']} cores, random inputs, "
        "median of repeated calls after warm-up.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| FLOPs per image (forward pass, TensorFlow profiler; multiply-add = 2) | "
        f"{model['flops_per_image'] / 1e6:,.0f} M |",
        f"| serving call, batch 1 (compiled forward + Grad-CAM maps) | {model['serving_batch1']['median_ms']:.2f} ms |",
        f"| compiled forward pass, batch 1 | {model['forward_batch1']['median_ms']:.2f} ms |",
        f"| `model.predict`, batch 1 (the naive way) | {model['predict_batch1']['median_ms']:.2f} ms |",
        f"| compiled forward pass, batch {batch} | {fb['median_ms']:.1f} ms ({fb['per_image_ms']:.2f} ms per image) |",
        f"| achieved, batch 1 (best call) | {model['gflops_batch1']:.1f} GFLOP/s |",
        f"| achieved, batch {batch} (best call) | {model[f'gflops_batch{batch}']:.1f} GFLOP/s |",
        f"| machine peak: float32 {model['matmul_side']}x{model['matmul_side']} matmul (best call) | "
        f"{model['peak_gflops']:.1f} GFLOP/s |",
        f"| batch 1 / batch {batch} as a share of the peak | "
        f"{model['gflops_batch1'] / model['peak_gflops'] * 100:.0f}% / "
        f"{model[f'gflops_batch{batch}'] / model['peak_gflops'] * 100:.0f}% |",
        f"| Analyzer load (model, card, compiled function, warm-up) | {model['load_and_warmup_s']:.2f} s |",
        "",
    ]
    b = model["batching"]
    out += [
        "## Micro-batching",
        "",
        f"`Analyzer.analyze` on the 224x224 JPEG, {b['films']} films: one caller at a time, then "
        f"{b['callers']} threads at once, whose films the micro-batcher (`webapp/inference/batching.py`, "
        f"at most {b['max_batch']} per pass) runs together.",
        "",
        f"| one caller | {b['callers']} callers at once | speed-up | mean batch formed |",
        "|---:|---:|---:|---:|",
        f"| {b['sequential_films_per_s']:.1f} films/s | {b['concurrent_films_per_s']:.1f} films/s | "
        f"{b['speed_up']:.2f}x | {b['mean_batch']:.1f} |",
        "",
    ]
    queue, burst, validation = f["queue"], f["queue"]["burst"], f["queue"]["validation"]
    backlog = queue["backlog"]
    out += [
        "## The queue: a PACS burst and a validation run",
        "",
        "The web app, the DICOM node (`flask dicom listen`) and the queue worker (`flask jobs worker "
        f"--threads {queue['worker_threads']}`) on one fresh instance folder (benchmarks/queue_bench.py); "
        "the sending modality runs on the same cores.",
        "",
        "| | films | wall time | films/s |",
        "|---|---:|---:|---:|",
        f"| burst over {burst['associations']} DICOM associations, first C-STORE to last prediction logged | "
        f"{burst['films']} | {burst['total_s']:.1f} s (all stored after {burst['stored_s']:.1f} s) | "
        f"{burst['films_per_s']:.1f} |",
        f"| the same, intake alone: {backlog['films']} more films taken by the node with the worker stopped | "
        f"{backlog['films']} | {backlog['intake_s']:.1f} s | {backlog['intake_films_per_s']:.1f} |",
        f"| the same, queue alone: those films drained by a fresh worker, first to last prediction logged | "
        f"{backlog['films']} | {backlog['drain_s']:.1f} s | {backlog['drain_films_per_s']:.1f} |",
        f"| validation run, `POST /api/v1/validation-runs` to `done` | {validation['films']} | "
        f"{validation['total_s']:.1f} s | {validation['films_per_s']:.1f} |",
        "",
    ]
    if f["workers"]:
        out += [
            "## Memory by worker count",
            "",
            "Each worker after warm-up (every worker served uploads), PSS from /proc/PID/smaps_rollup: "
            "the pages a worker shares with the others are split between them.",
            "",
            "| workers | PSS per worker (MB) | PSS of all workers (MB) | RSS per worker (MB) |",
            "|---:|---:|---:|---:|",
        ]
        for n, memory in f["workers"].items():
            pss = [m["pss"] for m in memory.values()]
            rss = [m["rss"] for m in memory.values()]
            out.append(
                f"| {n} | {', '.join(f'{x:.0f}' for x in pss)} | {sum(pss):.0f} | {', '.join(f'{x:.0f}' for x in rss)} |"
            )
        out.append("")

    workers = max(len(s["memory_mb"]) for s in ours["memory"])
    out += [
        "## Start-up and memory",
        "",
        "| | ours | naive |",
        "|---|---:|---:|",
        f"| process start to `/readyz` 200 | {ours['ready_s']:.2f} s | {naive['ready_s']:.2f} s |",
        f"| first upload after ready | {_ms(ours['first_request_ms'])} ms | {_ms(naive['first_request_ms'])} ms |",
        "",
        "Memory of each of our gunicorn workers, from /proc/PID/smaps_rollup: RSS (resident, what `ps` "
        "and the target count), PSS (shared pages split between the processes mapping them) and private "
        "(pages only this worker holds). Most of the difference is TensorFlow's shared library, mapped "
        "once for all workers.",
        "",
        "| sample | requests served | "
        + " | ".join(f"worker {i + 1}: RSS / PSS / private (MB)" for i in range(workers))
        + " |",
        "|---|---:|" + "---:|" * workers,
    ]
    for sample in ours["memory"]:
        cells = " | ".join(
            f"{m['rss']:.0f} / {m['pss']:.0f} / {m['uss']:.0f} (pid {pid})" for pid, m in sample["memory_mb"].items()
        )
        out.append(f"| {sample['label']} | {sample['requests']:,} | {cells} |")
    pids = [set(s["memory_mb"]) for s in ours["memory"]]
    if pids[-1] != pids[0]:
        out += [
            "",
            "New worker pids in a later sample are workers that gunicorn recycled (`max_requests`) "
            "and that loaded the model again while the others kept serving.",
        ]

    load = ours["load"]
    out += [
        "",
        f"## Load test: {load['seconds']:.0f} s at concurrency {load['concurrency']}",
        "",
        f"{load['requests']:,} requests ({load['rps']:.1f} req/s), a weighted mix of chest films, non-chest "
        "images that should be answered UNKNOWN, and broken files that must be refused with a 4xx.",
        "",
        "| upload | expected | sent | 2xx | 4xx | 5xx | connection errors | answered UNKNOWN | p50 (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in load["rows"]:
        out.append(
            f"| {r['upload']} | {r['expect']} | {r['sent']} | {r['ok']} | {r['client_error']} | "
            f"{r['server_error']} | {r['connection_error']} | {r['unknown']} | {_ms(r['p50'])} |"
        )
    out += [
        "",
        f"Database afterwards: {ours['db_rows']:,} prediction rows for {ours['successes']:,} successful "
        f"answers over the whole run ({ours['requests']:,} requests), "
        + ("one row per success, same ids." if ours["db_rows"] == ours["successes"] else "**mismatch**."),
        "",
    ]
    return "\n".join(out)
