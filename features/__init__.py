"""Audio, dB mel, image views, the dataset and the feature cache; plus the one atomic file writer."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temporary file beside it, then rename.

    Readers see the old file or the whole new one, never a half-written one; the temporary file is
    removed whether ``write`` succeeds, fails or is interrupted.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
