"""What the machine is doing, as `pyperf system show` tells it: the facts that move a CPU timing.

`static_facts()` (what does not change while hwnas runs: governor, turbo, transparent huge
pages, isolated CPUs, SMT) goes into every target fingerprint; `check()` adds what does change
(load, busy processes, the worker's affinity) and one line of advice per fact. Linux only;
what cannot be read is reported as "unknown", never guessed.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

SYS_CPU = Path("/sys/devices/system/cpu")


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def governors() -> list[str]:
    return sorted({g for g in (_read(p) for p in SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_governor")) if g})


def turbo() -> str:
    """on / off / unknown: intel_pstate's no_turbo, or cpufreq's boost."""
    no_turbo = _read(SYS_CPU / "intel_pstate/no_turbo")
    if no_turbo is not None:
        return "off" if no_turbo == "1" else "on"
    boost = _read(SYS_CPU / "cpufreq/boost")
    if boost is not None:
        return "on" if boost == "1" else "off"
    return "unknown"


def transparent_hugepages() -> str:
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    chosen = [w.strip("[]") for w in text.split() if w.startswith("[")]
    return chosen[0] if chosen else "unknown"


def static_facts() -> dict[str, Any]:
    """The machine's settings that a CPU latency depends on; part of the target fingerprint."""
    return {
        "governor": ",".join(governors()) or "unknown",
        "turbo": turbo(),
        "thp": transparent_hugepages(),
        "isolated_cpus": _read(SYS_CPU / "isolated") or "",
        "smt": _read(SYS_CPU / "smt/active") or "unknown",
    }


def _cpu_times() -> dict[int, tuple[str, int]]:
    """pid -> (command, user+system ticks) for every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        stat = _read(d / "stat")
        if not stat:
            continue
        try:
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(d.name)] = (comm, int(fields[11]) + int(fields[12]))
        except (ValueError, IndexError):
            continue
    return out


def busy_processes(interval_s: float = 0.5, min_share: float = 0.1) -> list[dict[str, Any]]:
    """Processes that used more than `min_share` of a core over `interval_s`, busiest first."""
    before = _cpu_times()
    time.sleep(interval_s)
    after = _cpu_times()
    hz = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    busy = []
    for pid, (comm, ticks) in after.items():
        if pid == me or pid not in before:
            continue
        share = (ticks - before[pid][1]) / hz / interval_s
        if share >= min_share:
            busy.append({"pid": pid, "command": comm, "cpu_share": round(share, 2)})
    return sorted(busy, key=lambda b: -b["cpu_share"])


def check(worker_cpus: list[int] | None = None, allowed: list[int] | None = None) -> list[dict[str, str]]:
    """Every fact with its value and one line of advice ('ok' where there is nothing to do).
    allowed: the cores hwnas may use (default: this process's affinity)."""

    facts = static_facts()
    allowed = sorted(allowed or os.sched_getaffinity(0))
    load1, load5, _ = os.getloadavg()
    busy = busy_processes()
    gov = facts["governor"]
    rows = [
        ("cpu", cpu_model(), "ok"),
        ("cpu count", f"{os.cpu_count()} ({len(allowed)} usable by hwnas: {','.join(map(str, allowed))})",
         "ok" if len(allowed) >= 2 else "one core: --isolation pin is impossible; measurements pause training instead"),
        ("governor", gov, "ok" if gov in ("performance", "unknown") else
         "set the performance governor (cpupower frequency-set -g performance) so the clock does not ramp mid-run"
         if gov != "unknown" else "ok"),
        ("turbo", facts["turbo"], "turn turbo off for repeatable timings (it varies with temperature and load)"
         if facts["turbo"] == "on" else "ok"),
        ("transparent huge pages", facts["thp"], "ok" if facts["thp"] != "always" else
         "THP 'always' can move latencies between processes (page placement); 'madvise' is steadier"),
        ("isolated cpus", facts["isolated_cpus"] or "none",
         "ok" if facts["isolated_cpus"] else "no isolated core: the OS may schedule other work on the measured core"),
        ("smt", facts["smt"], "SMT on: a busy sibling thread slows the measured core; pin the worker to a core whose "
         "sibling is idle" if facts["smt"] == "1" else "ok"),
        ("load average", f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
         "ok" if load1 < 0.5 else f"the machine is busy (load {load1:.2f}): measurements will be retried or flagged"),
        ("busy processes", ", ".join(f"{b['command']}[{b['pid']}] {b['cpu_share']:.0%}" for b in busy[:5]) or "none",
         "ok" if not busy else "stop them before measuring, or expect drift flags"),
        ("worker affinity", ",".join(map(str, worker_cpus)) if worker_cpus else f"any of {','.join(map(str, allowed))}",
         "ok" if worker_cpus else "the worker shares cores with hwnas's own work: use --isolation pin or pause"),
    ]
    return [{"fact": f, "value": str(v), "advice": a} for f, v, a in rows]
