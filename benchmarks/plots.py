"""benchmark.png: latency distributions, throughput against concurrency, worker memory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

OURS, NAIVE = "#1f77b4", "#d62728"


def plot(f: dict, path: Path) -> None:
    fig, (lat, thr, mem) = plt.subplots(1, 3, figsize=(17, 5.2))
    _latency(lat, f)
    _throughput(thr, f)
    _memory(mem, f)
    fig.suptitle(
        f"CXR Screen benchmark, {f['host']['date_utc']}, {f['host']['nproc']} cores ({f['host']['cpu_model']})",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(ax, f: dict) -> None:
    names = list(f["inputs"])
    positions, data, colours = [], [], []
    for i, name in enumerate(names):
        for offset, side, colour in ((-0.18, "ours", OURS), (0.18, "naive", NAIVE)):
            samples = f[side]["latency"][name].get("samples_ms") or [float("nan")]
            positions.append(i + offset)
            data.append(samples)
            colours.append(colour)
    boxes = ax.boxplot(
        data,
        positions=positions,
        widths=0.3,
        whis=(1, 99),
        showfliers=True,
        patch_artist=True,
        flierprops={"markersize": 2},
    )
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.55)
    ax.set_yscale("log")
    # "JPEG 3000x3000, 8-bit" -> "JPEG\n3000x3000": short enough to sit side by side.
    ax.set_xticks(range(len(names)), [f["inputs"][n]["description"].split(",")[0].replace(" ", "\n", 1) for n in names])
    ax.set_ylabel("end-to-end latency (ms, log scale)")
    ax.set_title("Latency at concurrency 1 (box: quartiles, whiskers: p1-p99)")
    ax.plot([], [], color=OURS, lw=6, alpha=0.55, label="ours")
    ax.plot([], [], color=NAIVE, lw=6, alpha=0.55, label="naive")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)


def _throughput(ax, f: dict) -> None:
    levels = list(f["ours"]["levels"])
    for side, colour in (("ours", OURS), ("naive", NAIVE)):
        stats = f[side]["levels"]
        ax.plot(levels, [stats[c]["rps"] for c in levels], "o-", color=colour, label=f"{side} req/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second (224x224 JPEG)")
    ax.set_title("Throughput and p50 latency against concurrency")
    twin = ax.twinx()
    for side, colour in (("ours", OURS), ("naive", NAIVE)):
        stats = f[side]["levels"]
        twin.plot(levels, [stats[c]["p50"] for c in levels], "s--", color=colour, alpha=0.6, label=f"{side} p50 ms")
    twin.set_ylabel("p50 latency (ms)")
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], loc="upper left")
    ax.grid(alpha=0.3)


def _memory(ax, f: dict) -> None:
    samples = f["ours"]["memory"]
    pids = sorted({pid for s in samples for pid in s["memory_mb"]})
    for i, pid in enumerate(pids):
        points = [(s["requests"], s["memory_mb"][pid]) for s in samples if pid in s["memory_mb"]]
        (line,) = ax.plot(
            [p[0] for p in points], [p[1]["rss"] for p in points], "o-", label=f"worker {i + 1} RSS (pid {pid})"
        )
        ax.plot(
            [p[0] for p in points],
            [p[1]["uss"] for p in points],
            "o--",
            color=line.get_color(),
            alpha=0.6,
            label=f"worker {i + 1} private",
        )
    ax.axhline(700, color="grey", ls=":", label="700 MB budget")
    top = max(m["rss"] for s in samples for m in s["memory_mb"].values())
    ax.set_ylim(0, max(800, top * 1.1))
    ax.set_xlabel("requests served by the service")
    ax.set_ylabel("memory (MB)")
    ax.set_title("Worker memory from warm-up to the end of the load test")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
