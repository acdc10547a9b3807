"""The library behind ``evaluate.py``: choosing which runs are pooled (``groups``), the numbers of one
group (``metrics``), their text and markdown (``tables``), the confusion and training-curve figures
(``figures``) and the PCA of the cached images (``pca``). Runs are read through the run store
(``models.runs``). Every module reports bad input as ``EvaluateError`` (one line for the user) and
skipped input with ``warn``; none imports the scripts above it."""

import sys

from models import runs


class EvaluateError(Exception):
    """Bad or missing input; ``str()`` is the one line shown to the user."""


def warn(message):
    """One line on stderr: something was skipped, the rest goes on."""
    print(f"evaluate.py: warning: {message}", file=sys.stderr)


def find_runs(runs_root, model=None, data=None) -> list:
    """``models.runs.find_runs``, each folder skipped said with ``warn``."""
    return runs.find_runs(runs_root, model, data, warn)
