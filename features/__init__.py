"""Audio, dB mel, image views, the dataset and the feature cache; plus the one atomic file writer."""

import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

# Temporary entries are named after their owner process, ``<name>.tmp-<pid>-<hex>``,
# ``<name>.partial-<pid>`` or ``<name>.old-<pid>``, so a later run can tell a dead owner's leftovers
# (removed) from a running owner's work (kept).
TEMP_RE = re.compile(r"\.(?:tmp|partial|old)-(?P<pid>\d+)(?:-[0-9a-f]+)?$")
# Tests only: a process whose environment names a file (a substring of its name) kills itself with
# SIGKILL halfway through writing it, so every kill point can be exercised deterministically.
KILL_ENV = "GTZAN_GENRE_KILL_AT"


def temp_name(path, kind: str = "tmp") -> Path:
    """A temporary sibling of ``path`` owned by this process: ``.<name>.<kind>-<pid>[-<hex>]``."""
    path = Path(path)
    tail = f"-{os.urandom(3).hex()}" if kind == "tmp" else ""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}{tail}")


def kill_point(path) -> None:
    """SIGKILL this process if ``$GTZAN_GENRE_KILL_AT`` names ``path`` (tests of interrupted writes)."""
    at = os.environ.get(KILL_ENV)
    if at and at in Path(path).name:
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temporary file beside it, then rename.

    Readers see the old file or the whole new one, never a half-written one. The data is on disk
    (fsync) before the rename. The temporary file is removed whether ``write`` succeeds, fails or is
    interrupted; after a kill, ``remove_orphans`` removes it once this process is gone.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            kill_point(path)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def owner_alive(name: str) -> bool:
    """Whether the process that owns a temporary entry (by its name, see ``TEMP_RE``) still runs."""
    m = TEMP_RE.search(name)
    if not m:
        return True
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_orphans(folder) -> list:
    """Delete the temporary entries directly in ``folder`` whose owner process is gone; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = [p for p in folder.iterdir() if TEMP_RE.search(p.name) and not owner_alive(p.name)]
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # a read-only folder: the leftover stays, the build goes on
                p.unlink(missing_ok=True)
    return gone


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
