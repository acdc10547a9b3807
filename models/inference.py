"""Classifying audio with trained runs: the inference library under ``predict.py``.

``load_member`` reads one run folder through the run store (``models.runs.verify_run``: checksums of
every file, model weights included, before anything is loaded), checks that its feature record is
what this code computes (``features.cache.record_problem``) and has the model's family load it as a
scorer of windows (``models.family.Family.scorer``). A ``Predictor`` averages the runs of one model
over a file's windows (``features.clips.Windows``: decoded block by block in bounded memory, each
turned into model inputs by the same clip pipeline as the cache, ``features.clips.Clip``); a
``Tagger`` gives musicnn's own 50 tags. See ``predict.py`` for the window and averaging rules.
"""

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from features import clips
from features.cache import record_problem

from . import REGISTRY, runs
from .family import ModelError, family_of, model_file, resolve_device


class UsageError(Exception):
    """No usable model, or options that do not fit together: one line, exit status 2."""


class FileError(Exception):
    """Why one input cannot be classified (the caller names the file)."""


class Member(NamedTuple):
    """One loaded run: ``score(clip)`` -> (vector over classes, weight) for one window."""

    name: str  # the run folder relative to the runs root
    path: Path  # the run folder
    config: dict
    kind: str  # "probability" (log-probabilities averaged) or "score" (decision scores)
    score: object  # a models.family.Scorer


def _verified(run_dir: Path, note) -> runs.Run:
    """The run in ``run_dir`` after ``runs.verify_run``; UsageError naming the damaged file and the repair."""
    try:
        run = runs.verify_run(run_dir)
    except runs.RunError as err:
        raise UsageError(str(err)) from None
    if not run.verified:
        note(f"{run_dir} has no checksums (made before they were recorded); read unverified")
    missing = [k for k in ("model", "classes", "features", "hparams") if k not in run.config]
    if missing:
        raise UsageError(f"{run_dir / 'config.json'}: no {', '.join(missing)} (written by an older "
                         f"models/train.py?); retrain the run")
    return run


def _family(run: runs.Run, device: str):
    """(model file, family, pretrained network or None) of a run's model; UsageError when unusable."""
    name = run.config["model"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UsageError(f"{run.path / 'config.json'}: model {name!r} is not a model name")
    if name not in REGISTRY:
        raise UsageError(f"{run.path}: model {name} has no models/{name}.py in this code")
    module, family = model_file(name), family_of(name)
    hp = run.config["hparams"]
    try:
        return module, family, family.embedder(hp, device, run.config["features"].get("network"))
    except ModelError as err:
        raise UsageError(str(err)) from None


def _check_features(run: runs.Run, embedder) -> None:
    """Refuse a run trained on features this code does not compute (another fingerprint)."""
    problem = record_problem(run.config["features"], embedder.identity if embedder else None)
    if problem:
        raise UsageError(f"{run.path}: {problem}; retrain it: "
                         f"`{runs.repair_command(run.path, run.config, force=False)}`")


def load_member(run_dir: Path, runs_root: Path, note=print, device: str = "cpu") -> Member:
    """Read, check and load one run folder onto ``device``; UsageError (one line) when it cannot be used."""
    run = _verified(Path(run_dir), note)
    module, family, embedder = _family(run, device)
    _check_features(run, embedder)
    try:
        name = run.path.resolve().relative_to(Path(runs_root).resolve()).as_posix()
    except ValueError:  # a --run folder outside the runs root: <data>/<model>/<run>
        name = "/".join(run.path.resolve().parts[-3:])
    try:
        scorer = family.scorer(module, run, embedder, device)
    except ModelError as err:
        raise UsageError(str(err)) from None
    return Member(name, run.path, run.config, "score" if family.key == "scores" else "probability", scorer)


def _log_softmax(v: np.ndarray) -> np.ndarray:
    m = v.max()
    return v - (m + np.log(np.exp(v - m).sum()))


class Result(NamedTuple):
    """One file's outcome: per-class probabilities (or decision scores) and its length."""

    values: np.ndarray
    duration_s: float


class Prepared(NamedTuple):
    """A file's windows with their inputs computed (``Predictor.prepare``), ready to be scored."""

    clips: list  # features.clips.Clip, or backbone patches for the Tagger
    samples: int  # samples read, at the predictor's rate


class Predictor:
    """Runs of one model that share classes and feature settings, averaged.

    ``classify(path)`` streams a file window by window; ``prepare(path)`` then ``score(prepared)``
    does the same in two steps, the first (decoding, every input the models read) on any thread.
    """

    item = "genre"

    def __init__(self, members: list):
        first = members[0].config
        for m in members[1:]:
            for key in ("classes", "features"):
                if m.config[key] != first[key]:
                    raise UsageError(f"{m.name} and {members[0].name} differ in their {key}; cannot average them")
        self.members, self.classes = members, first["classes"]
        self.config = clips.config_from_record(first["features"])
        self.kind = members[0].kind
        self.per_block = members[0].score.per_block
        self.names = [m.name for m in members]
        self.identity = _identity(m.path / "COMPLETE" for m in members)

    def _windows(self, path: Path) -> clips.Windows:
        from features import audio

        sr = self.config.sr
        return clips.Windows(audio.stream(path, sr), round(self.config.duration * sr), round(clips.MIN_SECONDS * sr),
                             align_end=not self.per_block)

    def classify(self, path: Path) -> Result:
        """Scores of one file; AudioError, FileError or ValueError (one line) when it cannot be used."""
        windows = self._windows(path)
        return self._combine((clips.Clip(y, valid, self.config) for y, valid in windows), windows)

    def prepare(self, path: Path) -> Prepared:
        """Every window of a file with the inputs its models read computed; errors as ``classify``."""
        windows, prepared = self._windows(path), []
        for y, valid in windows:
            clip = clips.Clip(y, valid, self.config)
            for member in self.members:
                member.score.prepare(clip)
            prepared.append(clip)
        return Prepared(prepared, windows.samples)

    def score(self, prepared: Prepared) -> Result:
        """``classify``'s result from a prepared file."""
        return self._combine(prepared.clips, prepared)

    def _combine(self, windows, counted) -> Result:
        """The runs' mean over the windows, weighted as each scorer says; ``counted.samples`` is read last."""
        sums, weights = np.zeros((len(self.members), len(self.classes))), np.zeros(len(self.members))
        for clip in windows:
            for i, member in enumerate(self.members):
                scores, weight = member.score(clip)
                sums[i] += weight * scores
                weights[i] += weight
        sr = self.config.sr
        if not weights.all():
            raise FileError(f"{counted.samples / sr:.2f} s long, under the {clips.MIN_SECONDS:g}-s minimum")
        means = sums / weights[:, None]
        if self.kind == "score":
            return Result(means.mean(axis=0), counted.samples / sr)
        per_run = [_log_softmax(m) for m in means]
        return Result(np.exp(_log_softmax(np.mean(per_run, axis=0))), counted.samples / sr)


def _identity(records) -> str:
    """A short hash of what the runs are: the bytes of each one's COMPLETE (the checksums of every file,
    weights included) or, for an old run without checksums, of its config.json."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.read_bytes() or record.with_name("config.json").read_bytes())
    return digest.hexdigest()[:16]


def pretrained(device: str = "cpu"):
    """The musicnn network on ``device`` as an ``Embedder`` (one per process); UsageError saying how to
    install it."""
    from . import musicnn, tfbundle

    try:
        return musicnn.embedder(resolve_device(device))
    except (musicnn.BackboneMissing, tfbundle.BundleError, ModelError) as err:
        raise UsageError(str(err)) from None


class Tagger:
    """musicnn's own 50 Million Song Dataset tags (``--tags``): the mean of its tag probabilities over
    every 3-s patch of a file (each an independent sigmoid, so they do not sum to 1). No run is read."""

    kind, item = "probability", "tag"

    def __init__(self, device: str = "cpu"):
        from . import musicnn

        embedder = pretrained(device)  # the one-line install hint when the weights are missing
        self.musicnn, self.device = musicnn, resolve_device(device)
        self.classes, self.names = list(musicnn.MSD_TAGS), ["musicnn MSD_musicnn"]
        self.identity = hashlib.sha256(f"tags {embedder.identity}".encode()).hexdigest()[:16]

    def _patches(self, path: Path):
        """(the backbone patches of each 30-s window of a file, lazily; the windows, which count samples)."""
        from features import audio, backbone

        sr = backbone.SR
        windows = clips.Windows(audio.stream(path, sr), 30 * sr, round(clips.MIN_SECONDS * sr), align_end=False)
        return (backbone.patches(y[:valid], sr) for y, valid in windows), windows

    def prepare(self, path: Path) -> Prepared:
        """The backbone patches of every window of a file; AudioError when it cannot be read."""
        patches, windows = self._patches(path)
        return Prepared(list(patches), windows.samples)

    def score(self, prepared: Prepared) -> Result:
        return self._mean(prepared.clips, prepared)

    def classify(self, path: Path) -> Result:
        """Tag probabilities of one file, window by window; AudioError, FileError or ValueError (one line)."""
        return self._mean(*self._patches(path))

    def _mean(self, patch_sets, counted) -> Result:
        from features import backbone

        total, count = np.zeros(len(self.classes)), 0
        for patches in patch_sets:
            tags = self.musicnn.taggram(patches, self.device)
            total, count = total + tags.sum(0), count + len(tags)
        if not count:
            raise FileError(f"{counted.samples / backbone.SR:.2f} s long, under the {clips.MIN_SECONDS:g}-s minimum")
        return Result(total / count, counted.samples / backbone.SR)
