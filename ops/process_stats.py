"""Figures about this process that benchmarks report."""

from __future__ import annotations

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
