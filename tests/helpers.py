"""Helpers shared by several test files (plain functions; fixtures live in conftest.py)."""
import signal
from contextlib import contextmanager


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
