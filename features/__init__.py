"""Audio, dB mel, image views, the clip pipeline, the dataset and the feature cache; ``files``: the
project's file transactions."""

import importlib
import os
import platform
from pathlib import Path


def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup (container) CPU quota.

    ``os.sched_getaffinity`` exists only on Linux (macOS and Windows fall back to ``os.cpu_count``),
    and neither sees a container's ``cpu.max`` quota, which would otherwise oversubscribe the cores.
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):  # cgroup v2, v1
        try:
            text = Path(path).read_text().split()
            quota, period = (text if len(text) == 2 else
                             text + Path(path).with_name("cpu.cfs_period_us").read_text().split())
            if quota not in ("max", "-1"):
                n = min(n, max(1, int(quota) // int(period)))
            break
        except (OSError, ValueError):
            continue
    return max(1, n)


def versions(**modules) -> dict:
    """``{"python": ..., name: version}``: the versions a file was made with, recorded for the reader
    (never compared). ``modules`` maps each recorded name to the module it is read from, e.g.
    ``versions(numpy="numpy", pillow="PIL")``."""
    return {"python": platform.python_version(),
            **{name: importlib.import_module(module).__version__ for name, module in modules.items()}}
