"""How many processes render while the dataset index is built, when `--prepare_workers` is 0 (auto).

A pod's `limits.cpu` reaches the container as cgroup v2's `cpu.max` ("quota period", or "max period" without a
limit), and a CPU set as the process's affinity; `os.cpu_count()` sees neither and counts the node's cores. Two
workers pay off only where the process may run on two CPUs at once: one where the quota or the affinity gives fewer.
"""

from __future__ import annotations

import os

CPU_MAX = "/sys/fs/cgroup/cpu.max"
CPU_MAX_ENV = "HIGGS_CPU_MAX_PATH"  # another cpu.max to read (tests)
AUTO_WORKERS = 2  # more gave nothing measurable on 2 cores; the builder itself is one process (docs/performance.md)


def usable_cpus() -> float:
    """CPUs this process may use at once: its affinity, capped by the cgroup's CPU quota when there is one."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cpus = float(os.cpu_count() or 1)
    try:
        with open(os.environ.get(CPU_MAX_ENV, CPU_MAX)) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2, or a file it cannot read: the affinity
        pass
    return cpus


def prepare_workers(requested: int) -> int:
    """`requested`, or for 0 (auto) `AUTO_WORKERS` where 2 CPUs or more are usable, else 1 (in this process)."""
    if requested > 0:
        return requested
    return AUTO_WORKERS if usable_cpus() >= 2 else 1
