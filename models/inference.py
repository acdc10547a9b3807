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
    """One file's outcome: per-class probabilities (or decision scores), its length and loudest sample,
    and, when asked, its segments."""

    values: np.ndarray
    duration_s: float
    peak: float  # the largest sample magnitude (1.0 = full scale): how ``predict`` tells silence
    segments: list = None  # (start_s, end_s, values) per segment, in time order


class Prepared(NamedTuple):
    """A file's windows with their inputs computed (``Predictor.prepare``), ready to be scored."""

    clips: list  # features.clips.Clip, or (start sample, backbone patches) for the Tagger
    samples: int  # samples read, at the predictor's rate
    peak: float


def _segments(parts, per: int, finish) -> list:
    """Consecutive parts grouped ``per`` at a time within each window: [(start_s, end_s, values)].

    ``parts``: per window (start_s, end_s, seconds per part, rows (n, n_classes)); ``finish`` turns the
    mean of a group's rows into its values.
    """
    out = []
    for start_s, end_s, unit, rows in parts:
        for j in range(0, len(rows), per):
            a = start_s + j * unit
            out.append((round(a, 3), round(min(a + per * unit, end_s), 3), finish(rows[j:j + per].mean(0))))
    return out


def _per(segment_s: float, unit: float) -> int:
    """Parts of ``unit`` seconds in a segment of about ``segment_s`` (at least one)."""
    return max(1, round(segment_s / unit))


class Predictor:
    """Runs of one model that share classes and feature settings, averaged.

    ``classify(path)`` streams a file window by window; ``prepare(path)`` then ``score(prepared)``
    does the same in two steps, the first (decoding, every input the models read) on any thread;
    ``score_many`` scores several prepared files, their backbone patches through the network together.
    ``segment_s``: also score consecutive segments of about that many seconds (``Result.segments``),
    each a whole number of the model's finest parts (``Scorer.segments``: a 3-s patch for ``best``,
    a window for the others).
    """

    item = "genre"

    def __init__(self, members: list, segment_s: float = None):
        first = members[0].config
        for m in members[1:]:
            for key in ("classes", "features"):
                if m.config[key] != first[key]:
                    raise UsageError(f"{m.name} and {members[0].name} differ in their {key}; cannot average them")
        self.members, self.classes, self.segment_s = members, first["classes"], segment_s
        self.config = clips.config_from_record(first["features"])
        self.kind = members[0].kind
        self.per_block = members[0].score.per_block
        self.names = [m.name for m in members]
        self.identity = _identity(m.path / "COMPLETE" for m in members)

    @property
    def embedders(self) -> list:
        """The pretrained networks the runs' inputs go through, each once."""
        return list({id(m.score.embedder): m.score.embedder for m in self.members
                     if m.score.embedder is not None}.values())

    @property
    def batch(self) -> int:
        """Backbone patches worth scoring together (1 without a backbone)."""
        return max([e.batch for e in self.embedders], default=1)

    def n_patches(self, prepared) -> int:
        """Backbone patches of a prepared file (0 when its models read none, or it is not prepared)."""
        from features import backbone

        if prepared is None or not self.embedders:
            return 0
        return int(sum(backbone.n_patches(c.valid, c.config.sr) for c in prepared.clips))

    def _windows(self, path: Path) -> clips.Windows:
        from features import audio

        sr = self.config.sr
        return clips.Windows(audio.stream(path, sr), round(self.config.duration * sr), round(clips.MIN_SECONDS * sr),
                             align_end=not self.per_block)

    def _clips(self, windows: clips.Windows):
        return (clips.Clip(y, valid, self.config, windows.start) for y, valid in windows)

    def classify(self, path: Path) -> Result:
        """Scores of one file; AudioError, FileError or ValueError (one line) when it cannot be used."""
        windows = self._windows(path)
        return self._combine(self._clips(windows), windows)

    def prepare(self, path: Path) -> Prepared:
        """Every window of a file with the inputs its models read computed; errors as ``classify``."""
        windows, prepared = self._windows(path), []
        for clip in self._clips(windows):
            for member in self.members:
                member.score.prepare(clip)
            prepared.append(clip)
        return Prepared(prepared, windows.samples, windows.peak)

    def score(self, prepared: Prepared) -> Result:
        """``classify``'s result from a prepared file."""
        return self._combine(prepared.clips, prepared)

    def score_many(self, prepared: list) -> list:
        """``score`` of each prepared file; the backbone (if any) embeds all their windows together, in
        passes of at least its ``batch`` patches, rather than a file at a time."""
        every = [clip for p in prepared for clip in p.clips]
        for embedder in self.embedders:
            clips.embed_together(every, embedder)
        return [self.score(p) for p in prepared]

    def _combine(self, windows, counted) -> Result:
        """The runs' mean over the windows, weighted as each scorer says; ``counted.samples`` is read last."""
        sums, weights = np.zeros((len(self.members), len(self.classes))), np.zeros(len(self.members))
        parts = []
        for clip in windows:
            for i, member in enumerate(self.members):
                scores, weight = member.score(clip)
                sums[i] += weight * scores
                weights[i] += weight
            if self.segment_s:
                parts.append(self._parts(clip))
        sr = self.config.sr
        if not weights.all():
            raise FileError(f"{counted.samples / sr:.2f} s long, under the {clips.MIN_SECONDS:g}-s minimum")
        segments = _segments(parts, _per(self.segment_s, parts[0][2]), self._finish) if parts else None
        return Result(self._finish(sums / weights[:, None]), counted.samples / sr, counted.peak, segments)

    def _finish(self, per_run: np.ndarray) -> np.ndarray:
        """The runs' (n_runs, n_classes) mean log-probabilities (scores) -> probabilities (mean scores)."""
        if self.kind == "score":
            return per_run.mean(axis=0)
        return np.exp(_log_softmax(np.mean([_log_softmax(m) for m in per_run], axis=0)))

    def _parts(self, clip) -> tuple:
        """(start_s, end_s, seconds per part, per-part rows (n, n_runs, n_classes)) of one window."""
        per_run = [member.score.segments(clip) for member in self.members]
        unit, sr = per_run[0][1], self.config.sr
        rows = np.stack([r for r, _ in per_run], axis=1)
        return clip.start / sr, (clip.start + clip.valid) / sr, unit, rows


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
    batch = 1  # each file's patches go through the network on their own

    @staticmethod
    def n_patches(prepared) -> int:
        return 0

    def __init__(self, device: str = "cpu", segment_s: float = None):
        from . import musicnn

        embedder = pretrained(device)  # the one-line install hint when the weights are missing
        self.musicnn, self.device, self.segment_s = musicnn, resolve_device(device), segment_s
        self.classes, self.names = list(musicnn.MSD_TAGS), ["musicnn MSD_musicnn"]
        self.identity = hashlib.sha256(f"tags {embedder.identity}".encode()).hexdigest()[:16]

    def _patches(self, path: Path):
        """((start sample, backbone patches) of each 30-s window of a file, lazily; the windows, which
        count samples)."""
        from features import audio, backbone

        sr = backbone.SR
        windows = clips.Windows(audio.stream(path, sr), 30 * sr, round(clips.MIN_SECONDS * sr), align_end=False)
        return ((windows.start, backbone.patches(y[:valid], sr)) for y, valid in windows), windows

    def prepare(self, path: Path) -> Prepared:
        """The backbone patches of every window of a file; AudioError when it cannot be read."""
        patches, windows = self._patches(path)
        return Prepared(list(patches), windows.samples, windows.peak)

    def score(self, prepared: Prepared) -> Result:
        return self._mean(prepared.clips, prepared)

    def score_many(self, prepared: list) -> list:
        return [self.score(p) for p in prepared]

    def classify(self, path: Path) -> Result:
        """Tag probabilities of one file, window by window; AudioError, FileError or ValueError (one line)."""
        return self._mean(*self._patches(path))

    def _mean(self, patch_sets, counted) -> Result:
        """The mean tag probabilities over every patch (and per segment, when asked)."""
        from features import backbone

        total, count, parts = np.zeros(len(self.classes)), 0, []
        for start, patches in patch_sets:
            tags = self.musicnn.taggram(patches, self.device)
            total, count = total + tags.sum(0), count + len(tags)
            start_s = start / backbone.SR
            parts.append((start_s, start_s + len(tags) * backbone.PATCH_SECONDS, backbone.PATCH_SECONDS, tags))
        if not count:
            raise FileError(f"{counted.samples / backbone.SR:.2f} s long, under the {clips.MIN_SECONDS:g}-s minimum")
        segments = (_segments(parts, _per(self.segment_s, backbone.PATCH_SECONDS), lambda v: v)
                    if self.segment_s else None)
        return Result(total / count, counted.samples / backbone.SR, counted.peak, segments)
