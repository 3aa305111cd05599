"""What the numbers were measured on: date, CPU, cores, memory, versions, and who else was busy."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def competing_jobs() -> list[str]:
    """Other heavy jobs of this project on the machine (model training), which skew timings."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if " -m training." in command:  # training.train, training.evaluate, training.ensemble...
            found.append(command[:160])
    return found


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all processes, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (the servers and their
    workers, the model benchmark): what the benchmark itself used."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def describe() -> dict:
    import numpy

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": _cpu_model(),
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gb": _memory_gb(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "kernel": platform.release(),
        "competing_jobs": competing_jobs(),
    }
