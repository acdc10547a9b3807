"""File transactions shared by the cache and the run store: atomic writes, temporary entries named
after their owner, removal of what killed processes left, folder swaps."""

import contextlib
import glob
import os
import re
import shutil
import signal
from pathlib import Path

# Temporary entries are named after their owner process, ``<name>.tmp-<pid>-<hex>``,
# ``<name>.partial-<pid>`` or ``<name>.old-<pid>``, so a later run without the folder's lock can tell
# a dead owner's leftovers (removed) from a running owner's work (kept); see ``remove_orphans``.
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
    """Whether the process that owns a temporary entry (by its name, see ``TEMP_RE``) still runs.

    A zombie (killed but not yet reaped: the normal state in a container whose PID 1 does not reap)
    counts as gone: ``os.kill(pid, 0)`` succeeds on it, but it will never finish its work.
    """
    m = TEMP_RE.search(name)
    if not m:
        return True
    pid = int(m["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # a pid beyond the OS's range: a name we never wrote, so not ours to remove
        return True
    except PermissionError:  # another user's process: it exists, it may still be a zombie
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``/proc`` says process ``pid`` is a zombie (False where there is no ``/proc``: macOS)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "<pid> (<command>) <state> ...": the command may itself hold spaces and parentheses
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def _orphan(entry: Path, held: Path) -> bool:
    """Whether temporary entry ``entry`` is left over: its owner is gone or, when the caller holds
    the lock of ``held`` (None: no lock), it belongs to ``held``, whatever its pid."""
    m = TEMP_RE.search(entry.name)
    if not m:
        return False
    ours = held is not None and (entry.parent == held or entry.name[:m.start()] == f".{held.name}")
    return ours or not owner_alive(entry.name)


def remove_orphans(path, locked: bool) -> list:
    """Delete the temporary entries in folder ``path`` and beside it that nobody will finish.

    Parameters
    ----------
    path : path
        A cache or run folder (it may be missing).
    locked : bool
        Whether the caller holds ``path``'s lock. Only a holder writes ``path``, so then every
        temporary entry of ``path`` (those in it, and its siblings ``.<name>.<kind>-<pid>``) is an
        orphan whatever its pid: a pid can be a killed builder's zombie, or reused by an unrelated
        process. Entries beside ``path`` that are not its own (another cache's, another run's),
        and all of them without the lock, are orphans when their owner is gone (``owner_alive``).

    Returns
    -------
    list of Path
        The entries removed (a read-only folder's stay where they are; the caller goes on).
    """
    path = Path(path)
    held = path if locked else None
    gone = [p for folder in (path.parent, path) if folder.is_dir() for p in folder.iterdir() if _orphan(p, held)]
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
    return gone


def replace_folder(path) -> None:
    """Put this process's complete folder ``temp_name(path, "partial")`` in place of folder ``path``.

    ``path`` may be missing. The old folder is renamed aside (``.<name>.old-<pid>``), the new one
    renamed in, then the old one removed: readers see the old folder whole until the new one is
    whole, bar the instant between the two renames; a kill in that instant is mended by the next
    holder of ``path``'s lock (``finish_replace``).
    """
    path = Path(path)
    old = temp_name(path, "old")
    if path.exists():
        os.replace(path, old)
    kill_point(f"{path.name}@swap")  # the worst moment: the old folder aside, the new one not yet in
    os.replace(temp_name(path, "partial"), path)
    shutil.rmtree(old, ignore_errors=True)


def finish_replace(path) -> None:
    """Complete a ``replace_folder`` of ``path`` killed between its renames (call holding its lock).

    ``path`` is then missing and its old folder aside. The old one was set aside only once the new
    one was complete, so the new one goes in when it is there; otherwise the old one goes back.
    """
    path = Path(path)
    if path.exists():
        return
    for old in path.parent.glob(f".{glob.escape(path.name)}.old-*"):
        pid = old.name.rpartition(".old-")[2]
        if pid.isdigit():
            new = path.with_name(f".{path.name}.partial-{pid}")
            os.replace(new if new.is_dir() else old, path)
            return
