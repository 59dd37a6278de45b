"""CPU seconds of the processes under test, read from ``/proc``.

A process's figure is its own user+system time (all threads) plus what its reaped children
used, plus the same for every live descendant, so PostgreSQL's figure covers the postmaster,
its background workers and every backend, including backends that exited during the step.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def cpu_seconds(pid: int, tree: Mapping[int, list[int]] | None = None) -> float:
    """User+system seconds of ``pid``, its reaped children and its live descendants."""
    tree = _children() if tree is None else tree
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        fields = _stat(current)
        if fields is None:
            continue
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        total += utime + stime + cutime + cstime
        stack.extend(tree.get(current, []))
    return total / CLOCK_TICKS


class CpuMeter:
    """Named processes whose CPU is sampled before and after each step."""

    def __init__(self, pids: Mapping[str, Callable[[], int | None]]):
        self.pids = pids

    def sample(self) -> dict[str, float | None]:
        tree = _children()
        out: dict[str, float | None] = {}
        for name, pid_of in self.pids.items():
            pid = pid_of()
            out[name] = None if pid is None else cpu_seconds(pid, tree)
        return out

    @staticmethod
    def delta(
        before: Mapping[str, float | None], after: Mapping[str, float | None]
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, end in after.items():
            start = before.get(name)
            out[name] = None if end is None or start is None else round(end - start, 3)
        return out


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_facts() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": _first_line(["java", "-version"]),
        "go": _first_line(["go", "version"]),
        "loadavg_at_start": os.getloadavg(),
    }
