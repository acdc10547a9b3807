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
import contextlib
import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from features import audio

from .family import resolve_device
from .inference import FileError, Predictor, Tagger, load_member

PREPARE_SECONDS = 300.0  # longer files are streamed window by window rather than prepared whole
# A file whose loudest sample is below this is silent: no genre. -60 dBFS is 1/1000 of full scale, far
# under any mastered music, far over 16-bit dither (-90 dBFS), so a recorded silence counts too.
SILENT_DBFS = -60.0
CONVERT_HINT = "convert it to .wav or .flac first, e.g. `ffmpeg -i IN OUT.wav`"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Spec(NamedTuple):
    """What a worker needs to load the model: plain values, so a Ray actor can receive them."""

    run_dirs: tuple  # run folders (str) to average; empty for the tagger
    runs_root: str
    tags: bool = False
    top: int = 3
    device: str = "cpu"
    segment_s: float = None  # also each segment's top classes, segments of about this many seconds
    min_probability: float = None  # a top probability below it makes the genre "unknown"


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
            self.predictor = Tagger(spec.device, spec.segment_s)
        else:
            members = [load_member(Path(d), Path(spec.runs_root), note=note or (lambda line: None),
                                   device=spec.device) for d in spec.run_dirs]
            self.predictor = Predictor(members, spec.segment_s)
        self.top = max(1, min(spec.top, len(self.predictor.classes)))
        names = self.predictor.names
        self.model = names[0] if len(names) == 1 else names
        self.model_id = self.predictor.identity
        self.on_cpu = resolve_device(spec.device) == "cpu"
        # files prepared ahead beyond the threads' own, so that a GPU's batch can fill: 30-s files hold 10 patches
        self.group_files = -(-self.predictor.batch // 10) if self.predictor.batch > 1 else 0

    def prepare(self, path: Path):
        """The file's prepared windows (any thread), or None for a long file (streamed when scored)."""
        try:
            head = audio.info(path)
        except (audio.AudioError, OSError):
            return None  # its error is said when it is classified, on the calling thread
        return self.predictor.prepare(path) if head.frames <= PREPARE_SECONDS * head.samplerate else None

    def results(self, group: list) -> list:
        """The Result, or the error, of each ``(path, prepared)`` in ``group``: the prepared ones scored
        together (``score_many``), a long file (prepared None) streamed on its own."""
        ready = [i for i, (_, prepared) in enumerate(group) if prepared is not None]
        out = [None] * len(group)
        try:
            for i, result in zip(ready, self.predictor.score_many([group[i][1] for i in ready])):
                out[i] = result
        except (FileError, ValueError):
            pass  # one file's problem: each is scored on its own below, and says its own error
        for i, (path, prepared) in enumerate(group):
            if out[i] is None:
                try:
                    out[i] = self.predictor.classify(path) if prepared is None else self.predictor.score(prepared)
                except (FileError, ValueError) as err:  # AudioError is a ValueError; so are samples mel_db refuses
                    out[i] = err
        return out

    def record(self, path: Path, result, caught: list) -> dict:
        """The record of one file from its Result (or error), with the warnings it raised."""
        if isinstance(result, Exception):
            obj = {"file": display(path), "error": error_text(path, result)}
        else:
            obj = {"file": display(path), **self._outcome(result), "model": self.model,
                   "duration_s": round(result.duration_s, 3)}
        if caught:
            obj["warnings"] = [display(" ".join(str(w.message).split())) for w in caught]
        return obj

    def _top(self, values) -> list:
        order = np.argsort(-values, kind="stable")[:self.top]
        key, item = self.predictor.kind, self.predictor.item
        return [{item: self.predictor.classes[i], key: round(float(values[i]), 6)} for i in order]

    def _outcome(self, result) -> dict:
        """``genre`` (genres only: the top one, ``unknown`` under ``min_probability``, ``silent``), ``top``
        and ``segments``, or ``silent`` and the peak for a silent file."""
        peak_dbfs = 20 * np.log10(result.peak) if result.peak > 0 else -np.inf
        genres = self.predictor.item == "genre"
        if peak_dbfs < SILENT_DBFS:
            return {**({"genre": "silent"} if genres else {}), "silent": True,
                    "peak_dbfs": None if result.peak == 0 else round(float(peak_dbfs), 1)}
        obj = {"top": self._top(result.values)}
        if genres:
            best = obj["top"][0]
            low = self.spec.min_probability is not None and best[self.predictor.kind] < self.spec.min_probability
            obj = {"genre": "unknown" if low else best["genre"], **obj}
        if result.segments is not None:
            obj["segments"] = [{"start_s": a, "end_s": b, "top": self._top(v)} for a, b, v in result.segments]
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
    """Records of ``paths`` in order, ``jobs`` threads working ahead (at most ``2 jobs`` files).

    On the CPU each thread classifies whole files, the network on one core each (``jobs`` > 1): on 2
    cores, two files at once run 15-25 % faster than one file's network on both cores with the inputs
    prepared beside it (bench/bench_library.py). On a GPU the threads prepare the inputs and the calling
    thread runs the network on several files' patches at once (``Classifier.results``), which fills it.

    Yields
    ------
    (Path, dict)
        The file and its record.
    """
    local = _Warnings()
    whole = classifier.on_cpu
    with warnings.catch_warnings(), _torch_threads(1 if whole and jobs > 1 else None):
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: _keep(local, message)
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs), initializer=_one_numba_thread) as pool:
            ahead, paths = collections.deque(), iter(paths)

            def submit():
                path = next(paths, None)
                if path is not None:
                    ahead.append((path, pool.submit(_whole if whole else _prepared, classifier, path, local)))

            for _ in range(2 * max(1, jobs) + (0 if whole else classifier.group_files)):
                submit()
            while ahead:
                if whole:
                    path, future = ahead.popleft()
                    submit()
                    result, caught = future.result()
                    yield path, classifier.record(path, result, caught)
                    continue
                group = _ready_group(ahead, classifier)
                for _ in group:
                    submit()
                local.caught = group[0][2]  # the scoring's own warnings join the first file's
                results = classifier.results([(path, prepared) for path, prepared, _ in group])
                local.caught = None  # before yielding: the caller's warnings are not this file's
                for (path, _, caught), result in zip(group, results):
                    yield path, classifier.record(path, result, caught)


@contextlib.contextmanager
def _torch_threads(n):
    """torch's intra-op threads set to ``n`` (None: left as they are) for the block, then restored."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ready_group(ahead: collections.deque, classifier: Classifier) -> list:
    """The next file, waited for, and the prepared files after it that are ready now, up to the backbone's
    batch of patches: [(path, prepared, warnings)]."""
    path, future = ahead.popleft()
    group = [(path, *future.result())]
    patches = classifier.predictor.n_patches(group[0][1])
    while ahead and ahead[0][1].done() and patches < classifier.predictor.batch:
        path, future = ahead.popleft()
        group.append((path, *future.result()))
        patches += classifier.predictor.n_patches(group[-1][1])
    return group


def _whole(classifier: Classifier, path: Path, local: _Warnings) -> tuple:
    """(Result or error, warnings raised meanwhile) of one file, all of it on a worker thread."""
    prepared, caught = _prepared(classifier, path, local)
    local.caught = caught
    try:
        return classifier.results([(path, prepared)])[0], caught
    finally:
        local.caught = None


def _prepared(classifier: Classifier, path: Path, local: _Warnings) -> tuple:
    """(prepared windows or None, warnings raised meanwhile) on a worker thread; errors wait for scoring."""
    local.caught = caught = []
    try:
        return classifier.prepare(path), caught
    except (FileError, ValueError):
        return None, []  # classified again on the calling thread, which says the error
    finally:
        local.caught = None


def _one_numba_thread() -> None:
    """A preparing thread runs its numba kernels (mel) on itself alone: the threads already share the
    cores with each other and with the network, and numba's own pool on top would oversubscribe them."""
    import numba

    numba.set_num_threads(1)  # per thread: the calling thread's numba keeps its own count


def _keep(local: _Warnings, message) -> None:
    if local.caught is not None:
        local.caught.append(warnings.WarningMessage(message, type(message), "", 0))
