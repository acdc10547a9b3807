"""The output that survives: ``predict.py --out FILE.jsonl``, one line per file, resumable.

Each line is one JSON object: a file's result (``file``, ``top``, ``model``, ``duration_s``) or its
error (``file``, ``error``), plus ``key``: what makes the line stand for that file and that model,
``{"size", "mtime_ns", "model_id"}``. A rerun with the same ``--out`` skips every file whose
(name, size, mtime, model) already has a line, so a run killed at any moment resumes and ends with
exactly one line per file. Lines are appended with one ``write`` each batch and made durable
(flush + fsync) every ``FSYNC_LINES`` lines or ``FSYNC_SECONDS``; a kill loses at most the lines
written since, which the rerun redoes. A last line torn by a kill (no newline, or not JSON) is cut off
when the file is opened, and its file redone. Error lines are kept as the answer for their file
unless errors are retried. A file classified again (changed since its line, another model, an error
retried) first has its old line taken out (the file rewritten atomically), so each file keeps one line.
"""

import json
import os
import time
from pathlib import Path

from features.files import atomic_write

FSYNC_LINES = 64
FSYNC_SECONDS = 2.0
_LINE_START = b'{"file": '  # how every line begins (``json.dumps`` of an object whose first key is file)


class ResultLogError(Exception):
    """The ``--out`` file cannot be used: one line naming it."""


def file_key(path, model_id: str) -> dict:
    """``{"size", "mtime_ns", "model_id"}`` of ``path`` now (size and mtime -1 when it cannot be stat'ed)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = -1, -1
    return {"size": size, "mtime_ns": mtime, "model_id": model_id}


def read_lines(path: Path) -> tuple:
    """(the JSON objects of its complete lines, their byte length): a torn last line (no newline, as
    a kill leaves it) is left out. A file that is not one of ours is refused, never cut."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as err:
        raise ResultLogError(f"{path}: cannot read ({err.strerror or err})") from None
    *lines, tail = data.split(b"\n")
    if tail and not tail.startswith(_LINE_START[:len(tail)]):
        raise ResultLogError(f"{path}: not a file of predict.py --out; choose another --out file")
    objects = []
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not (isinstance(obj, dict) and isinstance(obj.get("file"), str) and isinstance(obj.get("key"), dict)):
            raise ResultLogError(f"{path}: line {number} is not a line of predict.py --out; choose another "
                                 f"--out file")
        objects.append(obj)
    return objects, len(data) - len(tail)


class ResultLog:
    """An open ``--out`` file: the line of each file name (the last one when there are several),
    ``answered`` says whether it stands for a file now, ``forget`` takes lines out, ``add`` appends."""

    def __init__(self, path):
        self.path = Path(path)
        objects, good = read_lines(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size != good:
                os.truncate(self.path, good)  # the torn last line of a killed run: its file is redone
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise ResultLogError(f"{self.path}: cannot write ({err.strerror or err})") from None
        self.lines = {o["file"]: o for o in objects}
        self.pending, self.unsynced, self.synced_at = [], 0, time.monotonic()

    def answered(self, name: str, key: dict, retry_errors: bool = False) -> bool:
        """Whether the file ``name`` with ``key`` has its line (an error line only without ``retry_errors``)."""
        line = self.lines.get(name)
        return line is not None and line["key"] == key and not (retry_errors and "error" in line)

    def forget(self, names) -> None:
        """Take every line of the files ``names`` out (the file is rewritten atomically): they are about to
        be classified again (changed files, another model, errors retried), so each keeps one line."""
        names = set(names) & set(self.lines)
        if not names:
            return
        self.sync()
        kept = [o for o in read_lines(self.path)[0] if o["file"] not in names]
        text = "".join(json.dumps(o) + "\n" for o in kept).encode()
        try:
            os.close(self.fd)
            atomic_write(self.path, lambda f: f.write(text))
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as err:
            raise ResultLogError(f"{self.path}: cannot write ({err.strerror or err})") from None
        for name in names:
            del self.lines[name]

    def add(self, obj: dict) -> None:
        """Append one line (``obj`` holds ``file`` and ``key``); durable at the next sync."""
        self.pending.append(json.dumps(obj) + "\n")
        self.lines[obj["file"]] = obj
        if len(self.pending) + self.unsynced >= FSYNC_LINES or time.monotonic() - self.synced_at >= FSYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Write the pending lines in one ``write`` and fsync the file."""
        try:
            if self.pending:
                data = "".join(self.pending).encode()
                written = os.write(self.fd, data)
                while written < len(data):  # a short write (signals, pipes): the rest, still in order
                    written += os.write(self.fd, data[written:])
                self.unsynced += len(self.pending)
                self.pending = []
            os.fsync(self.fd)
        except OSError as err:  # a full disk: the lines written before stay; the rest is redone next time
            raise ResultLogError(f"{self.path}: cannot write ({err.strerror or err}); the files it holds "
                                 f"are kept, the same command goes on from there") from None
        self.unsynced, self.synced_at = 0, time.monotonic()

    def close(self) -> None:
        """Sync what it can and close; a write that fails here was already said by ``sync``'s caller."""
        try:
            self.sync()
        except ResultLogError:
            pass
        finally:
            os.close(self.fd)
