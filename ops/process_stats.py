"""Figures about this process that benchmarks report."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def peak_rss_kb() -> int:
    """Peak resident memory of this process image, in KiB.

    `VmHWM` from /proc, not `ru_maxrss`: Linux carries `ru_maxrss` across exec, so a
    process started by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _proc_table() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds (user and system, its own and those of the children it
    has reaped), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since the listing
        # after the command: state, ppid, ...; utime, stime, cutime, cstime are fields 14-17 of stat(5)
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
    return table


def tree_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants (Linux /proc; empty where
    there is none). The difference of two readings is what a tree used between them, except for
    processes that ended unreaped in between."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    used: dict[str, float] = {}
    for name, root in roots.items():
        if root not in table:
            continue
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += table[pid][1]
            todo.extend(children.get(pid, ()))
        used[name] = total
    return used
