"""Classify audio files with a trained run: ``python predict.py PATH [PATH ...]``.

A PATH is a file (classified whatever its name: libsndfile identifies the content) or a folder,
searched recursively for files with an audio extension (``features.dataset.AUDIO_EXTENSIONS``, any
case; hidden files, other files and symlink loops are skipped silently). Names beginning with a dash
follow ``--``: ``python predict.py -- -x.wav``. A PATH that is not a regular file (a FIFO, ``/dev/zero``,
a broken symlink) is refused in one line without being opened, so nothing blocks; a symlink to an audio
file is that file.

Which model
-----------
``--model NAME`` (default ``best``) picks the model's ``all`` run (trained on every clip) when there is
one, else its newest complete run; without ``--model`` and with no ``best`` run, the newest complete
run of any model. ``--ensemble`` averages every complete run of the model instead (seeds, folds).
``--run DIR`` names one run folder; ``--runs DIR`` is the root (default ``runs/``) and ``--data NAME``
chooses its data set when it holds several. A run folder is all prediction needs: its
``config.json`` (classes, feature settings and their fingerprint, model settings) and its weights
(``model.pt``, read with ``torch.load(weights_only=True)``, which runs no code; or ``svm.npz`` or
``head.npz``, read without pickles), plus, for ``best``, the pretrained musicnn weights of the
installed ``musicnn`` package. A run whose feature fingerprint differs from this code's (other
feature settings, or other musicnn weights) is refused with the command that retrains it.

``--tags`` prints musicnn's own 50 Million Song Dataset tags instead (``rock``, ``female vocalists``,
``80s``, ...: the mean of each tag's probability over the file's 3-s patches; the tags are independent
sigmoids and do not sum to 1). It needs no trained run.

Windows
-------
Audio is decoded block by block (``features.audio.stream``: any rate, channels and length, in bounded
memory) into the run's rate and cut into consecutive windows of the run's duration (30 s):

- models read one window, as in training: a file of up to 30 s is one window, zero-padded as the
  cache pads it; past the last full window, a rest of at least ``MIN_SECONDS`` (1 s) makes one more
  window that ends at the file's end (overlapping the one before, so no window of a long file holds
  padding); a shorter rest is dropped, as the cache keeps the first 30 s of GTZAN's 30.37-s clips.
  The file's log-probabilities are the mean over its windows, renormalised (SVM: mean scores);
- a model with ``clip_log_probs`` (``models/patchcnn.py``) scores the dB mel of each consecutive 30-s
  block with its true valid frame count (a last block of at least 1 s is zero-padded, its padding not
  counted), and the blocks are averaged weighted by their valid frames, so the result is the mean
  over the file's patches up to the rounding at block ends;
- ``best`` (``models/best.py``) cuts the audio of each consecutive 30-s block (its padding left out)
  into musicnn's 3-s patches, as the cache does, and scores the mean of their backbone features; the
  blocks are averaged weighted by their patch counts.

``--ensemble`` averages the runs' file-level log-probabilities (SVM: scores) and renormalises. Files
shorter than 1 s are refused.

Output
------
Text: per file its path, then one line per genre, best first (``genre  probability``; the SVM's
lines read ``genre  score S``), ``--top K`` of them (default 3, at most the class count).
``--json``: one JSON list at the end; ``--jsonl``: one object per line as each file finishes. Each
object is ``{"file", "top": [{"genre", "probability" (or "score")}], "model", "duration_s"}``, with
``model`` the run folder relative to the runs root (a list of them with ``--ensemble``).
A file name is printed (text, JSON and error lines alike) with each byte that is not UTF-8 as ``\\xNN``
and each control character (a newline, say) as ``\\xNN`` too, so every output line is valid UTF-8 and a
name never breaks a line; other names, spaces and all, print as they are.
Errors go to stderr, one line per file, and the other files go on. Exit status: 0 when every file
was classified, 1 when any failed (or a folder held no audio), 2 on a usage error or no usable model.
"""

import argparse
import importlib
import json
import os
import re
import sys
import warnings
import zipfile
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from features import backbone
from features.dataset import AUDIO_EXTENSIONS
from models.hparams import RUN_DIR_RE
from models.runfiles import RunError, repair_command, verify_run

TRAIN_HINT = "python run_all.py --models best"
CONVERT_HINT = "convert it to .wav or .flac first, e.g. `ffmpeg -i IN OUT.wav`"


class UsageError(Exception):
    """No usable model, or options that do not fit together: one line, exit status 2."""


class FileError(Exception):
    """Why one input cannot be classified (the caller names the file)."""


# ------------------------------------------------------------------------------------------ choosing runs

def _complete_runs(folder: Path) -> list:
    """The complete run folders ``<folder>/<model>/<run>`` (or ``<folder>/<run>`` when named so)."""
    found = []
    for path in sorted(folder.glob("*/*")):
        if RUN_DIR_RE.match(path.name) and (path / "COMPLETE").is_file():
            found.append(path)
    return found


def _config(run_dir: Path) -> dict:
    """``config.json`` of a run whose files pass ``verify_run`` (checksums, model weights included);
    UsageError naming the damaged file and the command that repairs it."""
    try:
        checked = verify_run(run_dir)
    except RunError as err:
        raise UsageError(str(err)) from None
    if checked.checksums is None:
        print(f"predict: note: {run_dir} has no checksums (made before they were recorded); "
              f"read unverified", file=sys.stderr)
    keys = ("model", "classes", "features", "hparams")
    missing = [k for k in keys if k not in checked.config]
    if missing:
        raise UsageError(f"{run_dir / 'config.json'}: no {', '.join(missing)} (written by an older "
                         f"models/train.py?); retrain the run")
    return checked.config


def _newest(runs: list) -> Path:
    def finished(run):
        try:
            stamp = str(json.loads((run / "config.json").read_text(encoding="utf-8")).get("finished", ""))
        except (OSError, ValueError, AttributeError):
            stamp = ""
        # ISO timestamps sort as strings; COMPLETE's mtime breaks ties
        return stamp, (run / "COMPLETE").stat().st_mtime

    return max(runs, key=finished)


def _data_folder(runs_root: Path, data: str) -> Path:
    """The one data set under ``runs_root`` to predict with (``--data`` or the only one there)."""
    if data is not None:
        folder = runs_root / data
        if not _complete_runs(folder):
            raise UsageError(f"no complete run under {folder}; `{TRAIN_HINT}` trains one")
        return folder
    folders = [d for d in sorted(runs_root.glob("*")) if d.is_dir() and _complete_runs(d)]
    if not folders:
        raise UsageError(f"no trained model under {runs_root}/; `{TRAIN_HINT}` trains one")
    if len(folders) > 1:
        raise UsageError(f"{runs_root}/ holds runs of several data sets ({', '.join(d.name for d in folders)}); "
                         f"choose one with --data NAME")
    return folders[0]


def choose_runs(runs_root: Path, model: str = None, data: str = None, ensemble: bool = False) -> list:
    """The run folders to predict with (see the module docstring); UsageError when there are none."""
    folder = _data_folder(runs_root, data)
    runs = [r for r in _complete_runs(folder) if r.parent.name == (model or "best")]
    if not runs and model:
        raise UsageError(f"no complete run of {model} under {folder}; "
                         f"`python run_all.py --models {model}` trains one")
    if not runs:  # the default model is not trained: the newest run of any model
        newest = _newest(_complete_runs(folder))
        print(f"predict: note: no best run under {folder}; using the newest run, {newest.parent.name}/{newest.name}",
              file=sys.stderr)
        if not ensemble:
            return [newest]
        runs = [r for r in _complete_runs(folder) if r.parent == newest.parent]
    if ensemble:
        return runs
    deployable = [r for r in runs if RUN_DIR_RE.match(r.name)["split"] == "all"]
    return [_newest(deployable or runs)]


# ------------------------------------------------------------------------------------------ loading runs

def _check_features(run_dir: Path, config: dict) -> None:
    """Refuse a run trained on features this code does not compute (another fingerprint)."""
    from features.cache import FeatureConfig, code_fingerprint

    settings = dict(config["features"])
    view, recorded = settings.pop("view", None), settings.pop("fingerprint", None)
    settings.pop("wave_scale", None)
    settings.pop("network", None)
    network = pretrained().identity if view == backbone.NAME else None
    try:
        current = code_fingerprint(view, FeatureConfig(**settings), network)
    except TypeError:  # settings this code does not know
        current = None
    if recorded != current:
        raise UsageError(f"{run_dir}: trained on features this code no longer computes (fingerprint "
                         f"{recorded}, now {current}); retrain it: `{repair_command(run_dir, config, force=False)}`")


def pretrained():
    """The musicnn network as an ``Embedder`` (one per process); UsageError saying how to install it."""
    from models import musicnn, tfbundle

    try:
        return musicnn.embedder()
    except (musicnn.BackboneMissing, tfbundle.BundleError) as err:
        raise UsageError(str(err)) from None


def _model_module(run_dir: Path, name):
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UsageError(f"{run_dir / 'config.json'}: model {name!r} is not a model name")
    try:
        return importlib.import_module(f"models.{name}")
    except ModuleNotFoundError:
        raise UsageError(f"{run_dir}: model {name} has no models/{name}.py in this code") from None


class Member(NamedTuple):
    """One loaded run: ``score(features)`` -> (vector over classes, weight) for one window."""

    name: str  # the run folder relative to the runs root
    config: dict
    kind: str  # "probability" (log-probabilities averaged) or "score" (the SVM's decision scores)
    score: object


def load_member(run_dir: Path, runs_root: Path) -> Member:
    """Read, check and load one run folder; UsageError (one line) when it cannot be used."""
    config = _config(run_dir)
    classes = config["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise UsageError(f"{run_dir / 'config.json'}: classes is not a list of two or more names")
    _check_features(run_dir, config)
    module = _model_module(run_dir, config["model"])
    try:
        name = run_dir.resolve().relative_to(runs_root.resolve()).as_posix()
    except ValueError:  # a --run folder outside the runs root: <data>/<model>/<run>
        name = "/".join(run_dir.resolve().parts[-3:])
    if hasattr(module, "decision_scores"):
        return Member(name, config, "score", _svm_scorer(run_dir, config, module))
    if config["features"].get("view") == backbone.NAME:
        return Member(name, config, "probability", _head_scorer(run_dir, config, module))
    return Member(name, config, "probability", _torch_scorer(run_dir, config, module))


def _load_arrays(run_dir: Path, config: dict, module, name: str, problem_of) -> dict:
    """The arrays of ``<run_dir>/<name>`` (``module.load``: np.load without pickles, so no code runs),
    checked by ``problem_of(params)`` (None when usable); UsageError naming the file and the retrain."""
    path = run_dir / name
    try:
        params = module.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"{path}: unreadable ({' '.join(str(err).split())}); retrain: "
                         f"`{repair_command(run_dir, config)}`") from None
    problem = problem_of(params)
    if problem:
        raise UsageError(f"{path}: {problem}, not a model of this run; retrain: `{repair_command(run_dir, config)}`")
    return params


def _svm_scorer(run_dir: Path, config: dict, module):
    from features import images

    view = config["features"]["view"]
    width, height = images.VIEWS.get(str(view)[3:], (0, 0))
    params = _load_arrays(run_dir, config, module, "svm.npz",
                          lambda p: _svm_problem(p, len(config["classes"]), width * height * 3))
    return lambda features: (module.decision_scores(params, features.view(view)[None])[0], 1.0)


def _head_scorer(run_dir: Path, config: dict, module):
    """A head on the backbone's features (``models/best.py``): the mean of a window's patch features,
    weighted by its patch count when windows are averaged."""
    embedder = pretrained()
    params = _load_arrays(run_dir, config, module, "head.npz",
                          lambda p: module.params_problem(p, len(config["classes"]), embedder.n_features))

    def score(features):
        x = features.embedding(embedder)
        return module.log_probs(params, x[None], np.array([len(x)]))[0], float(len(x))

    return score


def _svm_problem(params: dict, n_classes: int, n_values: int):
    """What makes ``params`` unusable for an SVM of ``n_classes`` on ``n_values`` pixels, or None."""
    keys = ("support_vectors", "dual_coef", "intercept", "n_support", "classes", "gamma")
    if any(k not in params for k in keys):
        return f"lacks {', '.join(k for k in keys if k not in params)}"
    sv, coef, n_support, classes = (params[k] for k in ("support_vectors", "dual_coef", "n_support", "classes"))
    m = len(classes) if classes.ndim == 1 else -1
    shapes_ok = (sv.ndim == 2 and sv.shape[1] == n_values and sv.dtype == np.uint8
                 and coef.shape == (m - 1, len(sv)) and params["intercept"].shape == (m * (m - 1) // 2,)
                 and n_support.shape == (m,) and params["gamma"].size == 1)
    # a string or structured array of the right shape would fail at the first file, with a traceback
    kinds_ok = all(params[k].dtype.kind == "f" for k in ("dual_coef", "intercept", "gamma"))
    if not kinds_ok or n_support.dtype.kind not in "iu":
        return "dual coefficients, intercepts, gamma or support counts of the wrong type"
    if not shapes_ok or m < 2 or n_support.sum() != len(sv) or (n_support < 0).any():
        return f"support vectors {sv.shape}, dual coefficients {coef.shape} do not fit {n_values} pixels"
    if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() >= n_classes:
        return f"classes outside 0..{n_classes - 1}"
    if int(params.get("n_classes", n_classes)) != n_classes:
        return f"{int(params['n_classes'])} classes, config.json names {n_classes}"
    return None


def _torch_scorer(run_dir: Path, config: dict, module):
    import torch

    path, n_classes = run_dir / "model.pt", len(config["classes"])
    hint = f"retrain: `{repair_command(run_dir, config)}`"
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles in several lines; one line says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  any failure means a damaged or foreign file; no code ran
        raise UsageError(f"{path}: not a readable state dict ({type(err).__name__}); {hint}") from None
    net, transform = module.build(n_classes)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path}: not the weights of models.{config['model']} with {n_classes} classes "
                         f"({first.rstrip(':.')}); {hint}") from None
    net.eval()
    hp = config["hparams"]
    if hasattr(module, "clip_log_probs"):
        return _clip_scorer(module, net)
    return _window_scorer(net, transform, hp.get("view"), hp.get("crop"), hp.get("loss", "nll"))


def _clip_scorer(module, net):
    import torch

    def score(features):
        n_valid = features.n_frames
        with torch.inference_mode():
            out = module.clip_log_probs(net, features.mel_db[None], np.array([n_valid], np.int64))
        return out[0].double().cpu().numpy(), float(n_valid)

    return score


def _window_scorer(net, transform, view, crop, loss):
    import torch

    def score(features):
        x = features.view(view)[None]
        with torch.inference_mode():
            out = net(transform(x if crop is None else x[:, :crop]))
            log_probs = out if loss == "nll" else torch.log_softmax(out, dim=1)
        return log_probs[0].double().cpu().numpy(), 1.0

    return score


# ------------------------------------------------------------------------------------------ one file

class Features:
    """The model inputs of one window, each computed at most once (ensemble members share them)."""

    def __init__(self, y: np.ndarray, valid: int, settings: dict):
        self.y, self.valid, self.s = y, valid, settings
        self._embedded = {}

    def embedding(self, embedder) -> np.ndarray:
        """(P, n_features) float32: ``embedder`` on the patches of the window's audio (not its padding)."""
        if embedder.name not in self._embedded:
            self._embedded[embedder.name] = embedder.embed(backbone.patches(self.y[:self.valid], self.s["sr"]))
        return self._embedded[embedder.name]

    @cached_property
    def mel_db(self) -> np.ndarray:
        from features import mel

        s = self.s
        return mel.mel_db(self.y, sr=s["sr"], n_fft=s["n_fft"], hop_length=s["hop_length"], n_mels=s["n_mels"],
                          fmin=s["fmin"], fmax=s["fmax"], top_db=s["top_db"])

    @property
    def n_frames(self) -> int:
        """Frames of ``mel_db`` that hold audio, as the training loop counts them."""
        from features import mel

        return min(mel.n_frames(self.valid, self.s["n_fft"], self.s["hop_length"]), self.mel_db.shape[1])

    def view(self, name: str) -> np.ndarray:
        """The cache array ``name`` (``wave``, ``mel_db``, ``img400``, ...) of this window."""
        from features import images

        if name == "wave":
            return self.y
        if name == "mel_db":
            return self.mel_db
        return images.image_views(self.mel_db, (name[3:],), self.s["top_db"])[name[3:]]


class Windows:
    """The windows of a stream of audio chunks (rules: the module docstring); ``samples`` counts all.

    Iterating yields ``(window, valid)``: an ``n``-sample float32 array (read-only to the caller) and
    how many of its samples are audio rather than padding.
    """

    def __init__(self, chunks, n: int, min_rest: int, align_end: bool):
        self.chunks, self.n, self.min_rest, self.align_end = chunks, n, min_rest, align_end
        self.samples = 0

    def __iter__(self):
        buf, fill, last_full = np.zeros(self.n, np.float32), 0, None
        for chunk in self.chunks:
            self.samples += len(chunk)
            while len(chunk):
                take = min(self.n - fill, len(chunk))
                buf[fill:fill + take], chunk = chunk[:take], chunk[take:]
                fill += take
                if fill == self.n:
                    yield buf, self.n
                    last_full, buf, fill = buf, np.zeros(self.n, np.float32), 0
        if fill < self.min_rest:
            return
        if self.align_end and last_full is not None:
            yield np.concatenate([last_full[fill:], buf[:fill]]), self.n
        else:
            yield buf, fill  # zero beyond fill


def _log_softmax(v: np.ndarray) -> np.ndarray:
    m = v.max()
    return v - (m + np.log(np.exp(v - m).sum()))


class Result(NamedTuple):
    """One file's outcome: per-class probabilities (or SVM scores) and its length."""

    values: np.ndarray
    duration_s: float


class Predictor:
    """Runs of one model that share classes and feature settings, averaged."""

    item = "genre"

    def __init__(self, members: list):
        first = members[0].config
        for m in members[1:]:
            for key in ("classes", "features"):
                if m.config[key] != first[key]:
                    raise UsageError(f"{m.name} and {members[0].name} differ in their {key}; cannot average them")
        self.members, self.classes, self.settings = members, first["classes"], first["features"]
        self.kind = members[0].kind
        module = importlib.import_module(f"models.{first['model']}")
        self.per_block = hasattr(module, "clip_log_probs") or first["features"].get("view") == backbone.NAME
        self.names = [m.name for m in members]

    def classify(self, path: Path) -> Result:
        """Scores of one file; AudioError, FileError or ValueError (one line) when it cannot be used."""
        from features import audio
        from features.cache import MIN_SECONDS

        sr = self.settings["sr"]
        windows = Windows(audio.stream(path, sr), round(self.settings["duration"] * sr), round(MIN_SECONDS * sr),
                          align_end=not self.per_block)
        sums, weights = np.zeros((len(self.members), len(self.classes))), np.zeros(len(self.members))
        for y, valid in windows:
            features = Features(y, valid, self.settings)
            for i, member in enumerate(self.members):
                scores, weight = member.score(features)
                sums[i] += weight * scores
                weights[i] += weight
        if not weights.all():
            raise FileError(f"{windows.samples / sr:.2f} s long, under the {MIN_SECONDS:g}-s minimum")
        means = sums / weights[:, None]
        if self.kind == "score":
            return Result(means.mean(axis=0), windows.samples / sr)
        per_run = [_log_softmax(m) for m in means]
        return Result(np.exp(_log_softmax(np.mean(per_run, axis=0))), windows.samples / sr)


class Tagger:
    """musicnn's own 50 Million Song Dataset tags (``--tags``): the mean of its tag probabilities over
    every 3-s patch of a file (each an independent sigmoid, so they do not sum to 1). No run is read."""

    kind, item = "probability", "tag"

    def __init__(self):
        from models import musicnn

        pretrained()  # the one-line install hint when the weights are missing
        self.musicnn, self.classes, self.names = musicnn, list(musicnn.MSD_TAGS), ["musicnn MSD_musicnn"]

    def classify(self, path: Path) -> Result:
        """Tag probabilities of one file; AudioError, FileError or ValueError (one line) when unusable."""
        from features import audio
        from features.cache import MIN_SECONDS

        sr = backbone.SR
        windows = Windows(audio.stream(path, sr), 30 * sr, round(MIN_SECONDS * sr), align_end=False)
        total, count = np.zeros(len(self.classes)), 0
        for y, valid in windows:
            tags = self.musicnn.taggram(backbone.patches(y[:valid], sr))
            total, count = total + tags.sum(0), count + len(tags)
        if not count:
            raise FileError(f"{windows.samples / sr:.2f} s long, under the {MIN_SECONDS:g}-s minimum")
        return Result(total / count, windows.samples / sr)


# ------------------------------------------------------------------------------------------ inputs

def audio_files(folder: Path) -> list:
    """Files with an audio extension under ``folder``, recursively and sorted, each folder once.

    Symlinked folders are followed, but a folder already seen (by device and inode) is not entered
    again, so a symlink loop ends. Hidden files and folders (``.x``, ``._x.wav`` resource forks) are
    left out.
    """
    seen, found = set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return found


def gather(paths: list, say) -> tuple:
    """(files to classify, whether every PATH was usable); a PATH that is not is reported through ``say``."""
    files, ok = [], True
    for p in map(Path, paths):
        if p.is_dir():
            found = audio_files(p)
            if not found:
                say(f"predict: {display(p)}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) in this folder",
                    sys.stderr)
                ok = False
            files += found
        else:
            files.append(p)  # a missing or special file is refused when it is read, in its turn
    return files, ok


# ------------------------------------------------------------------------------------------ output

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display(text) -> str:
    """``text`` (a path or message) as printable UTF-8 on one line: bytes that are not UTF-8 and control
    characters as ``\\xNN`` (the module docstring).

    A name that is not UTF-8 reaches Python as surrogates (``os.fsdecode``), which a UTF-8 stream
    refuses with a UnicodeEncodeError; escaping them keeps the rest of the name readable.
    """
    text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


class Output:
    """Writes each file's result in the chosen format (text, ``json`` or ``jsonl``)."""

    def __init__(self, fmt: str, top: int, predictor, say):
        self.fmt, self.predictor, self.say, self.done = fmt, predictor, say, []
        self.top = max(1, min(top, len(predictor.classes)))
        names = predictor.names
        self.model = names[0] if len(names) == 1 else names

    def add(self, path: Path, result: Result) -> None:
        order = np.argsort(-result.values, kind="stable")[:self.top]
        key, item = self.predictor.kind, self.predictor.item
        top = [{item: self.predictor.classes[i], key: round(float(result.values[i]), 6)} for i in order]
        obj = {"file": display(path), "top": top, "model": self.model, "duration_s": round(result.duration_s, 3)}
        if self.fmt == "jsonl":
            self.say(json.dumps(obj), sys.stdout)
        elif self.fmt == "json":
            self.done.append(obj)
        else:
            width = max(len(c) for c in self.predictor.classes)
            label = "score " if key == "score" else ""
            self.say("\n".join([display(path)] + [f"  {t[item]:<{width}}  {label}{t[key]:.3f}" for t in top]),
                     sys.stdout)

    def close(self) -> None:
        if self.fmt == "json":
            self.say(json.dumps(self.done, indent=1), sys.stdout)


def _printer(bar):
    """``say(text, stream)``: a flushed line that leaves the progress bar (when there is one) intact."""
    def say(text, stream):
        if bar is not None:
            bar.write(text, file=stream)
        else:
            print(text, file=stream)
        stream.flush()

    return say


# ------------------------------------------------------------------------------------------ main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="exit status: 0 all classified, "
                                "1 a file failed, 2 usage error or no usable model")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio file or folder (searched recursively)")
    p.add_argument("--top", type=int, metavar="K", help="genres (tags) shown per file (default 3; 5 with --tags)")
    p.add_argument("--model", metavar="NAME", help="model name (default best, else the newest run)")
    p.add_argument("--run", metavar="DIR", help="one run folder <runs>/<data>/<model>/<split>-<preset>-seed<k>")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run folders root (default runs/)")
    p.add_argument("--data", metavar="NAME", help="data set under --runs, when it holds several")
    p.add_argument("--ensemble", action="store_true", help="average every complete run of the model")
    p.add_argument("--tags", action="store_true", help="musicnn's 50 Million Song Dataset tags instead of "
                   "genres (no trained run needed)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="one JSON list on stdout")
    fmt.add_argument("--jsonl", dest="fmt", action="store_const", const="jsonl",
                     help="one JSON object per line, as each file finishes")
    args = p.parse_args(argv)
    if args.top is not None and args.top < 1:
        p.error("--top must be at least 1")
    args.top = args.top or (5 if args.tags else 3)
    if args.run and (args.model or args.data or args.ensemble):
        p.error("--run names one run folder: no --model, --data or --ensemble with it")
    if args.tags and (args.run or args.model or args.data or args.ensemble):
        p.error("--tags reads no run: no --run, --model, --data or --ensemble with it")
    return args


def load_predictor(args):
    """The Predictor of the chosen runs, or the Tagger for ``--tags``; UsageError when there is none."""
    if args.tags:
        return Tagger()
    runs_root = Path(args.runs)
    run_dirs = [Path(args.run)] if args.run else choose_runs(runs_root, args.model, args.data, args.ensemble)
    predictor = Predictor([load_member(d, runs_root) for d in run_dirs])
    data = predictor.members[0].config.get("data") or {}
    if data.get("synthetic") or data.get("data_name") == "synthetic":
        print(f"predict: warning: {predictor.members[0].name} was trained on the synthetic genre set; "
              f"its predictions mean nothing for real music", file=sys.stderr)
    return predictor


def _classify_all(files, predictor, output, say) -> bool:
    """Classify each file in turn; True when every one was."""
    from features.audio import AudioError

    ok = True
    for path in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                output.add(path, predictor.classify(path))
            except (FileError, ValueError) as err:  # AudioError is a ValueError; so are samples mel_db refuses
                problem = ' '.join(str(err.problem if isinstance(err, AudioError) else err).split())
                unreadable = problem.startswith(("not a recognised audio format", "cannot open as audio"))
                # display the whole line: an OSError's text may hold the name too
                say(f"predict: {display(f'{path}: {problem}')}" + (f"; {CONVERT_HINT}" if unreadable else ""),
                    sys.stderr)
                ok = False
        for w in caught:
            say(f"predict: warning: {display(' '.join(str(w.message).split()))}", sys.stderr)
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        predictor = load_predictor(args)
    except UsageError as err:
        print(f"predict: {err}", file=sys.stderr)
        return 2
    bar = None
    if any(Path(p).is_dir() for p in args.paths):
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)
    say = _printer(bar)
    files, ok = gather(args.paths, say)
    output = Output(args.fmt, args.top, predictor, say)
    if bar is not None:
        bar.total = len(files)
    try:
        ok = _classify_all(_counted(files, bar), predictor, output, say) and ok
        output.close()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        sys.stdout = open(os.devnull, "w")
        return 1
    finally:
        if bar is not None:
            bar.close()
    return 0 if ok else 1


def _counted(files, bar):
    for f in files:
        yield f
        if bar is not None:
            bar.update()


if __name__ == "__main__":
    sys.exit(main())
