"""The batch engine under ``predict.py``: many files, the model loaded once, inputs prepared ahead.

``Classifier(spec)`` loads the chosen runs (``models.inference``) or musicnn's tagger once per process.
``classify(classifier, paths, jobs)`` yields one record per file, in the order of ``paths``: ``jobs``
threads decode each file, cut its windows and compute every input its models read (dB mel, image
views, backbone patches: ``Scorer.prepare``) while the model scores the files before it on the
calling thread, so decoding overlaps the network. At most ``2 jobs`` files are prepared ahead
(bounded memory); a file longer than ``PREPARE_SECONDS`` is not prepared whole but streamed window
by window on the calling thread, as ``Predictor.classify`` does (a 2-hour mix stays in bounded memory).

A record is the JSON object ``predict.py`` prints for a file (``file``, ``top``, ``model``,
``duration_s``), or ``{"file", "error"}`` for a file that could not be classified, with the
``warnings`` it raised; ``predict.py`` adds its resume ``key``. ``Classifier.__call__`` is the one
per-batch function: the Ray engine (``models.cluster``) runs it in its actors on the same records.
"""

import collections
import concurrent.futures
import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from features import audio

from .inference import FileError, Predictor, Tagger, load_member

PREPARE_SECONDS = 300.0  # longer files are streamed window by window rather than prepared whole
CONVERT_HINT = "convert it to .wav or .flac first, e.g. `ffmpeg -i IN OUT.wav`"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Spec(NamedTuple):
    """What a worker needs to load the model: plain values, so a Ray actor can receive them."""

    run_dirs: tuple  # run folders (str) to average; empty for the tagger
    runs_root: str
    tags: bool = False
    top: int = 3
    device: str = "cpu"


def display(text) -> str:
    """``text`` (a path or message) as printable UTF-8 on one line: bytes that are not UTF-8 and control
    characters as ``\\xNN``.

    A name that is not UTF-8 reaches Python as surrogates (``os.fsdecode``), which a UTF-8 stream
    refuses with a UnicodeEncodeError; escaping them keeps the rest of the name readable.
    """
    text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


class Classifier:
    """A loaded predictor (or tagger) and how its results become records; ``__call__`` classifies a batch."""

    def __init__(self, spec: Spec, note=None):
        self.spec = spec
        if spec.tags:
            self.predictor = Tagger(spec.device)
        else:
            members = [load_member(Path(d), Path(spec.runs_root), note=note or (lambda line: None),
                                   device=spec.device) for d in spec.run_dirs]
            self.predictor = Predictor(members)
        self.top = max(1, min(spec.top, len(self.predictor.classes)))
        names = self.predictor.names
        self.model = names[0] if len(names) == 1 else names
        self.model_id = self.predictor.identity

    def prepare(self, path: Path):
        """The file's prepared windows (any thread), or None for a long file (streamed when scored)."""
        try:
            head = audio.info(path)
        except (audio.AudioError, OSError):
            return None  # its error is said when it is classified, on the calling thread
        return self.predictor.prepare(path) if head.frames <= PREPARE_SECONDS * head.samplerate else None

    def record(self, path: Path, prepared, caught: list) -> dict:
        """The record of one file: its result or its error, and the warnings it raised."""
        try:
            result = self.predictor.classify(path) if prepared is None else self.predictor.score(prepared)
        except (FileError, ValueError) as err:  # AudioError is a ValueError; so are samples mel_db refuses
            obj = {"file": display(path), "error": error_text(path, err)}
        else:
            order = np.argsort(-result.values, kind="stable")[:self.top]
            key, item = self.predictor.kind, self.predictor.item
            top = [{item: self.predictor.classes[i], key: round(float(result.values[i]), 6)} for i in order]
            obj = {"file": display(path), "top": top, "model": self.model, "duration_s": round(result.duration_s, 3)}
        if caught:
            obj["warnings"] = [display(" ".join(str(w.message).split())) for w in caught]
        return obj

    def __call__(self, batch: dict) -> dict:
        """The per-batch function: ``{"path": [str, ...]}`` -> the same paths and ``"record"``, each
        file's record as a JSON string (flat columns travel through Ray Data and Arrow as they are)."""
        paths = [str(p) for p in batch["path"]]
        records = [json.dumps(record) for _, record in classify(self, map(Path, paths), jobs=1)]
        return {"path": paths, "record": records}


def error_text(path, err) -> str:
    """The one-line reason a file failed (``predict: <this>`` is what the user reads)."""
    problem = " ".join(str(err.problem if isinstance(err, audio.AudioError) else err).split())
    unreadable = problem.startswith(("not a recognised audio format", "cannot open as audio"))
    # display the whole line: an OSError's text may hold the name too
    return display(f"{path}: {problem}") + (f"; {CONVERT_HINT}" if unreadable else "")


class _Warnings(threading.local):
    """The warnings raised on each thread while it works on a file (``catch_warnings`` is process-wide)."""

    caught = None


def classify(classifier: Classifier, paths, jobs: int):
    """Records of ``paths`` in order, each file prepared by one of ``jobs`` threads ahead of scoring.

    Yields
    ------
    (Path, dict)
        The file and its record.
    """
    local = _Warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: _keep(local, message)
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            ahead, paths = collections.deque(), iter(paths)

            def submit():
                path = next(paths, None)
                if path is not None:
                    ahead.append((path, pool.submit(_prepared, classifier, path, local)))

            for _ in range(2 * max(1, jobs)):
                submit()
            while ahead:
                path, future = ahead.popleft()
                submit()
                prepared, caught = future.result()
                local.caught = caught  # the scoring's own warnings join the file's
                record = classifier.record(path, prepared, caught)
                local.caught = None  # before yielding: the caller's warnings are not this file's
                yield path, record


def _prepared(classifier: Classifier, path: Path, local: _Warnings) -> tuple:
    """(prepared windows or None, warnings raised meanwhile) on a worker thread; errors wait for scoring."""
    local.caught = caught = []
    try:
        return classifier.prepare(path), caught
    except (FileError, ValueError):
        return None, []  # classified again on the calling thread, which says the error
    finally:
        local.caught = None


def _keep(local: _Warnings, message) -> None:
    if local.caught is not None:
        local.caught.append(warnings.WarningMessage(message, type(message), "", 0))
