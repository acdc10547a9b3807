"""File transactions shared by the cache and the run store: atomic writes, temporary entries named
after their owner, removal of what killed processes left, folder swaps, the one folder lock, the
advice for a failed write, the sha256 of a file, and the one-line error about a file."""

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, so folders cannot be locked (README: use WSL)
    fcntl = None

# Temporary entries are named after their owner process, ``<name>.tmp-<pid>-<hex>``,
# ``<name>.partial-<pid>`` or ``<name>.old-<pid>``, so a later run without the folder's lock can tell
# a dead owner's leftovers (removed) from a running owner's work (kept); see ``remove_orphans``.
TEMP_RE = re.compile(r"\.(?:tmp|partial|old)-(?P<pid>\d+)(?:-[0-9a-f]+)?$")
# Tests only: a process whose environment names a file (a substring of its name) kills itself with
# SIGKILL halfway through writing it, so every kill point can be exercised deterministically.
KILL_ENV = "GTZAN_GENRE_KILL_AT"
# errnos of a folder nobody can write (a read-only mount, no permission): a lock cannot be taken
# there, and nothing needs one, since no process can change what is there
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
# What to do when a folder cannot be written, by errno; ``{option}`` names the command-line option
# that puts the folder elsewhere (``--cache DIR``, ``--runs DIR``)
_ADVICE = {errno.ENOSPC: "the disk is full: free some space, or pass {option} on another disk",
           errno.EDQUOT: "the disk quota is used up: free some space, or pass {option} on another disk",
           errno.EROFS: "the file system is read-only: pass {option} on a writable disk",
           errno.EACCES: "no permission to write there: make it writable, or pass {option}",
           errno.EPERM: "no permission to write there: make it writable, or pass {option}",
           errno.EFBIG: "a file would exceed the file size limit (ulimit -f): raise it, or pass {option}"}
_OTHER_ADVICE = "check the disk, or pass {option} elsewhere"
_HASH_CHUNK = 1 << 22  # bytes hashed per read by sha256_file: model weights run to tens of MB


class FileProblem(Exception):
    """A file that cannot be used; ``str()`` is one line, ``<file>: <problem>``."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {' '.join(str(problem).split())}")
        self.path, self.problem = Path(path), problem

    def __reduce__(self):  # picklable, so it can come back from a worker process
        return type(self), (self.path, self.problem)


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


def write_json(path, obj) -> None:
    """Write ``obj`` to ``path`` as indented JSON (``indent=1``, UTF-8, a final newline), atomically."""
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read 4 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_advice(err: OSError, option: str) -> str:
    """What to do about ``err``, met writing a folder that ``option`` (``"--cache DIR"``) can move."""
    return _ADVICE.get(err.errno, _OTHER_ADVICE).format(option=option)


@contextlib.contextmanager
def folder_lock(folder, on_wait, keep_file: bool = False):
    """Hold ``.<name>.lock`` beside ``folder`` (flock): one process at a time writes ``folder``.

    Parameters
    ----------
    folder : path
        The folder to lock (it may be missing); its parent is created.
    on_wait : callable
        Called (no arguments) once, before blocking, when another process holds the lock.
    keep_file : bool
        Leave the lock file in place on release (the cache's, which has always stayed beside it);
        by default the holder removes it. Either way a process that got the lock on a file removed
        meanwhile takes it again on the new one, so two never hold the same folder.

    Yields
    ------
    bool
        True once held; False where nothing can be locked (no ``fcntl``: Windows; or the parent is
        read-only or not permitted, ``NOT_WRITABLE``): such a process can still read a complete folder.
    """
    folder = Path(folder)
    path = folder.with_name(f".{folder.name}.lock")
    waited = False
    while (f := _open_lock(path)) is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited:
                on_wait()
                waited = True
            fcntl.flock(f, fcntl.LOCK_EX)
        if _same_file(f, path):
            break
        f.close()
    if f is None:
        yield False
        return
    try:
        yield True
    finally:
        if not keep_file:
            path.unlink(missing_ok=True)
        f.close()


def _open_lock(path: Path):
    """The lock file opened for appending, or None where nothing can be locked (see ``folder_lock``)."""
    if fcntl is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")
    except OSError as err:
        if err.errno not in NOT_WRITABLE:
            raise
        return None


def _same_file(f, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path`` (a releasing holder removes it)."""
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


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
