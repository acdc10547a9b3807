"""Helpers shared by several test files (plain functions; fixtures live in conftest.py)."""
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

HAS_PROC = Path("/proc/self/stat").exists()  # where a zombie can be told from a running process


class Deadline(Exception):
    """A case ran past its time."""


@contextmanager
def deadline(seconds: float, what: str):
    """Raise Deadline in the main thread after ``seconds``, so a hanging decode fails instead of stalling."""
    def expire(signum, frame):
        raise Deadline(f"{what}: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def unreaped(proc):
    """Wait until ``proc`` (a ``subprocess.Popen``) has exited, leaving it a zombie for the body of the
    ``with`` (as under a container's PID 1 that never reaps), then reap it and close its pipes."""
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        yield proc
    finally:
        proc.communicate()


@contextmanager
def zombie():
    """The pid of a zombie: a child killed with SIGKILL that this process does not reap until the end."""
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    with unreaped(proc):
        assert is_zombie(proc.pid)
        yield proc.pid


def is_zombie(pid: int) -> bool:
    """Whether ``/proc`` shows process ``pid`` as a zombie (state ``Z``); tests using it need ``/proc``."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"

