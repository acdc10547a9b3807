"""The run store: the one owner of run folders; torch-free.

A run is a folder ``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<k>/``::

    config.json          ``RunConfig``: identity (model, split, preset, seed, settings, fingerprints of the
                         arrays it read), classes, feature record, versions, results
    history.csv          epoch, train_loss, train_acc, val_acc, test_acc_monitor, seconds (torch models)
    history_final.csv    the retrain on train+val, when the model is "final model on train+val"
    model.pt | svm.npz | head.npz | ...   the fitted model, as its family writes it (``RunConfig.files``)
    predictions.npz      log_probs or scores (n_test, n_classes) float32, labels, files, classes; none
                         for split ``all`` (nothing is tested)
    COMPLETE             written last: JSON {file name: sha256} of every file above

Writing (``models.train``): ``claim`` holds the run's lock and prepares the folder to train in (or
says the complete run can be reused, comparing identities in their JSON form and saying which key
differs when it cannot); every file is written atomically; ``seal`` writes COMPLETE last; a forced
retrain of a readable run trains in ``.<run>.partial-<pid>`` and ``commit`` swaps it in.

Reading (``evaluate.py``, ``predict.py``, ``models.inference``): ``verify_run`` checks each file listed
in COMPLETE against its checksum, that the files the run must have are listed, and the structure of
``config.json``; every problem is a ``RunError``, one line naming the file and the ``run_all.py``
command that repairs it. ``find_runs`` lists the complete runs of a runs folder (evaluation),
``choose_runs`` picks the ones to predict with (the ``all`` run, else the newest). An empty COMPLETE
comes from a run made before checksums were recorded: it is read unverified (structure checks only)
and ``run_all.py`` retrains it.

``checkpoint.pt`` is not listed (it is removed once the run is complete); it carries its own checksum
instead, see ``seal_bytes``.
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from features.files import (TEMP_RE, atomic_write, finish_replace, folder_lock, remove_orphans, replace_folder,
                            sha256_file, temp_name, write_json)

from .hparams import FOLD_RE, RUN_DIR_RE, SPLITS, is_split

# The files runs made before ``RunConfig.files`` was recorded may hold, besides COMPLETE.
LEGACY_FILES = ("config.json", "history.csv", "history_final.csv", "model.pt", "svm.npz", "head.npz",
                "predictions.npz")
HEX64 = re.compile(r"[0-9a-f]{64}")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# checkpoint.pt: this magic, the body's sha256 (32 bytes), the body (torch.save's bytes).
CHECKPOINT_MAGIC = b"gtzan-genre checkpoint 1\n"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc_monitor", "seconds")
MONITOR_COLUMN = "test_acc_monitor"  # histories written before it lack it
# What a run's predictions.npz calls its scores; the first present wins: new torch runs, old torch
# runs, SVM decision scores.
SCORE_KINDS = ("log_probs", "probs", "scores")
DEPLOY_SPLIT = "all"  # trained on every clip: nothing to test, the model to deploy


class RunError(Exception):
    """A damaged or unfinished run folder.

    Attributes
    ----------
    path : Path
        The file (or folder) that failed a check.
    problem : str
        What is wrong with it.
    command : str
        The ``run_all.py`` command that repairs it.

    ``str()`` is one line: ``<path>: <problem> — to repair: <command>``.
    """

    def __init__(self, path, problem: str, command: str):
        self.path, self.problem, self.command = Path(path), problem, command
        super().__init__(f"{self.path}: {problem} — to repair: {command}")


class RunFileError(Exception):
    """A run file (predictions, history) that cannot be read: one line naming it."""


class NoRun(Exception):
    """No complete run to use where one was asked for: one line saying how to train it."""


# ------------------------------------------------------------------------------------------ config

@dataclasses.dataclass
class RunConfig:
    """``config.json``: what a run is and what it measured. ``results`` (the family's own record:
    epochs, support vectors, the head's CV table) is written as top-level keys, as before."""

    identity: dict
    classes: list
    features: dict
    data: dict
    versions: dict
    device: str
    threads: int
    n_train: int
    n_val: int
    n_test: int
    results: dict
    test: dict
    reported: tuple
    wall_seconds: float
    finished: str
    files: list  # what the model's family wrote besides config.json and predictions.npz

    def to_json(self) -> dict:
        i = self.identity
        head = {"identity": i, "model": i["model"], "split": i["split"], "preset": i["preset"],
                "seed": i["seed"], "hparams": i["hparams"]}
        body = {k: getattr(self, k) for k in ("classes", "features", "data", "versions", "device", "threads",
                                              "n_train", "n_val", "n_test")}
        tail = {"test": self.test, "reported": self.reported, "wall_seconds": self.wall_seconds,
                "finished": self.finished, "files": self.files}
        return {**head, **body, **self.results, **tail}


def config_problem(run_dir: Path, config: dict):
    """What makes ``config`` not this folder's run config (None: nothing)."""
    match = RUN_DIR_RE.match(run_dir.name)
    expected = {"model": run_dir.parent.name}
    if match:
        expected.update(split=match["split"], preset=match["preset"], seed=int(match["seed"]))
    for key, value in expected.items():
        if key in config and config[key] != value:
            return f"{key} is {config[key]!r}, the folder says {value!r}"
    for key in ("data", "identity", "hparams", "features"):
        if not isinstance(config.get(key, {}), dict):
            return f"{key!r} is not an object"
    classes = config.get("classes", ["a", "b"])
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes)):
        return "'classes' is not a list of two or more distinct names"
    if not isinstance(config.get("test"), (dict, type(None))):
        return "'test' is not an object"
    files = config.get("files", [])
    if not (isinstance(files, list) and all(isinstance(f, str) and FILE_NAME.fullmatch(f) for f in files)):
        return "'files' is not a list of file names"
    return None


def canonical(obj):
    """``obj`` as JSON gives it back (tuples become lists, keys strings): the form identities are
    stored in, so a computed identity compares equal to a stored one."""
    return json.loads(json.dumps(obj))


def first_difference(stored, computed, where: str = ""):
    """``"key: stored -> computed"`` for the first key (dotted path) whose values differ, None if equal."""
    if isinstance(stored, dict) and isinstance(computed, dict):
        for key in list(stored) + [k for k in computed if k not in stored]:
            path = f"{where}.{key}" if where else str(key)
            if key not in stored or key not in computed:
                return f"{path}: {stored.get(key, '(none)')!r} -> {computed.get(key, '(none)')!r}"
            found = first_difference(stored[key], computed[key], path)
            if found:
                return found
        return None
    return None if stored == computed else f"{where or 'identity'}: {stored!r} -> {computed!r}"


# ------------------------------------------------------------------------------------------ naming

def run_dir_for(runs_root, data_name: str, model: str, split: str, preset: str, seed: int) -> Path:
    """``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<seed>``."""
    return Path(runs_root) / data_name / model / f"{split}-{preset}-seed{seed}"


def run_command(model=None, split=None, preset=None, seed=None, data_root=None, force: bool = False) -> str:
    """``python run_all.py [--models M] [--split S] [--preset P] [--seed K] [--data ROOT] [--force]``."""
    command = "python run_all.py"
    for flag, value in (("--models", model), ("--split", split), ("--preset", preset), ("--seed", seed),
                        ("--data", data_root)):
        command += f" {flag} {value}" if value not in (None, "") else ""
    return command + (" --force" if force else "")


def repair_command(run_dir, config=None, force: bool = True) -> str:
    """The ``run_all.py`` command that retrains the run in ``run_dir`` (its data folder from ``config``)."""
    run_dir = Path(run_dir)
    match = RUN_DIR_RE.match(run_dir.name)
    fields = {"split": match["split"], "preset": match["preset"], "seed": int(match["seed"])} if match else {}
    data = (config or {}).get("data") if isinstance(config, dict) else None
    root = data.get("data_root") if isinstance(data, dict) else None
    return run_command(run_dir.parent.name, **fields, data_root=root if isinstance(root, str) else None,
                       force=force)


# ------------------------------------------------------------------------------------------ sealing

def seal(run_dir, files=()) -> dict:
    """Write ``COMPLETE``: the sha256 of every run file present in ``run_dir`` (``LEGACY_FILES`` and
    the family's ``files``); returns that mapping."""
    run_dir = Path(run_dir)
    names = [n for n in dict.fromkeys(LEGACY_FILES + tuple(files)) if (run_dir / n).is_file()]
    checksums = {name: sha256_file(run_dir / name) for name in names}
    atomic_write(run_dir / "COMPLETE", lambda f: f.write((json.dumps(checksums, indent=1) + "\n").encode()))
    return checksums


def seal_bytes(body: bytes) -> bytes:
    """``body`` with a magic line and its sha256 in front, for a file that is its own checksum record."""
    return CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body


def unseal_bytes(path) -> bytes:
    """The body of a file written with ``seal_bytes``; ValueError when it is not one or is damaged."""
    data = Path(path).read_bytes()
    head = len(CHECKPOINT_MAGIC)
    if not data.startswith(CHECKPOINT_MAGIC) or len(data) < head + 32:
        raise ValueError("not a checkpoint of this version")
    body = data[head + 32:]
    if hashlib.sha256(body).digest() != data[head:head + 32]:
        raise ValueError("damaged (its bytes differ from its sha256)")
    return body


# ------------------------------------------------------------------------------------------ verifying

class Run(NamedTuple):
    """A complete run folder that passed ``verify_run``; ``k``/``fold`` are set for a fold ``k<K>f<i>``."""

    path: Path
    data: str
    model: str
    split: str
    preset: str
    seed: int
    config: dict
    finished: str
    k: int = None
    fold: int = None
    checksums: dict = None  # COMPLETE's {file: sha256}; None: made before checksums were recorded

    @property
    def verified(self) -> bool:
        """False for a run made before checksums were recorded (structure-checked only)."""
        return self.checksums is not None

    @property
    def group_split(self):
        """The split the run is grouped under: ``k<K>`` for a fold, else its own split."""
        return self.split if self.k is None else f"k{self.k}"


def verify_run(run_dir) -> Run:
    """Check a finished run folder before any of its files is used.

    Parameters
    ----------
    run_dir : path
        ``<runs>/<data>/<model>/<split>-<preset>-seed<k>``.

    Returns
    -------
    Run
        ``config`` (the parsed ``config.json``) and ``checksums`` (None for a run made before checksums
        were recorded: its files are then only structure-checked by whoever opens them).

    Raises
    ------
    RunError
        No ``COMPLETE``; ``COMPLETE`` is not a checksum list; a listed file is missing or its bytes
        differ from its checksum; a file the run must have is not listed, or a run file is present but
        not listed; ``config.json`` is not a run's config or names another run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "COMPLETE").is_file():
        raise RunError(run_dir, "no COMPLETE (unfinished or damaged run)", repair_command(run_dir, force=False))
    config = _read_config(run_dir)
    checksums = _read_checksums(run_dir, config)
    if checksums is not None:
        for name in _required(config, checksums):
            if name not in checksums:
                raise RunError(run_dir / "COMPLETE", f"does not list {name}", repair_command(run_dir, config))
        for name in set(LEGACY_FILES) | set(config.get("files", [])):
            if (run_dir / name).exists() and name not in checksums:
                raise RunError(run_dir / name, "not written by this run (not listed in COMPLETE)",
                               repair_command(run_dir, config))
        for name, digest in checksums.items():
            _check_file(run_dir / name, digest, config)
    return _run_record(run_dir, config, checksums)


def _run_record(run_dir: Path, config: dict, checksums) -> Run:
    match = RUN_DIR_RE.match(run_dir.name)
    fold = FOLD_RE.match(match["split"]) if match else None
    split = match["split"] if match else config.get("split")
    preset = match["preset"] if match else config.get("preset")
    seed = int(match["seed"]) if match else config.get("seed")
    return Run(run_dir, run_dir.parent.parent.name, run_dir.parent.name, split, preset, seed, config,
               finished=str(config.get("finished", "")), k=int(fold["k"]) if fold else None,
               fold=int(fold["fold"]) if fold else None, checksums=checksums)


def _read_checksums(run_dir: Path, config) -> dict:
    """COMPLETE's {name: sha256}, or None when it is empty (a run made before checksums)."""
    path = run_dir / "COMPLETE"
    try:
        raw = path.read_bytes()
        if not raw:
            return None
        checksums = json.loads(raw)
    except (OSError, ValueError) as e:
        raise RunError(path, f"unreadable ({e.__class__.__name__})", repair_command(run_dir, config)) from None
    allowed = set(LEGACY_FILES) | set(config.get("files", []))
    if not (isinstance(checksums, dict) and checksums and set(checksums) <= allowed
            and all(isinstance(v, str) and HEX64.fullmatch(v) for v in checksums.values())):
        raise RunError(path, "not a list of run files and their sha256", repair_command(run_dir, config))
    return checksums


def _required(config: dict, checksums: dict) -> list:
    """The files a finished run of this config must have written."""
    if "files" in config:
        family_files = config["files"]
    else:  # made before RunConfig.files: the weights file tells the family
        weights = next((w for w in ("svm.npz", "head.npz") if w in checksums), "model.pt")
        family_files = [weights] + (["history.csv"] if weights == "model.pt" else [])
    return ["config.json"] + family_files + (["predictions.npz"] if config.get("split") != DEPLOY_SPLIT else [])


def _check_file(path: Path, digest: str, config: dict) -> None:
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise RunError(path, "missing", repair_command(path.parent, config)) from None
    except OSError as e:
        raise RunError(path, f"unreadable ({e.strerror or e.__class__.__name__})",
                       repair_command(path.parent, config)) from None
    if actual != digest:
        raise RunError(path, "damaged (its bytes differ from the sha256 recorded in COMPLETE)",
                       repair_command(path.parent, config))


def _read_config(run_dir: Path) -> dict:
    """``config.json`` as a dict, checked to be a run config of this folder."""
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        problem = "missing" if isinstance(e, FileNotFoundError) else f"cannot read JSON ({e.__class__.__name__})"
        raise RunError(path, problem, repair_command(run_dir)) from None
    if not isinstance(config, dict):
        raise RunError(path, "expected a JSON object", repair_command(run_dir))
    problem = config_problem(run_dir, config)
    if problem:
        raise RunError(path, problem, repair_command(run_dir, config))
    return config


def readable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete run that ``evaluate.py`` and ``predict.py`` accept."""
    try:
        verify_run(run_dir)
    except RunError:
        return False
    return True


# ------------------------------------------------------------------------------------------ writing

def write_history(path: Path, rows) -> None:
    """A history CSV (``HISTORY_COLUMNS``), atomically."""
    out = io.StringIO()
    w = csv.DictWriter(out, HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(out.getvalue().encode()))


def write_predictions(run_dir: Path, key: str, scores, labels, files, classes) -> None:
    """``predictions.npz``: ``key`` (``log_probs`` or ``scores``) (n, C) float32, labels, files, classes."""
    atomic_write(run_dir / "predictions.npz", lambda f: np.savez(
        f, **{key: np.asarray(scores, np.float32)}, labels=labels, files=np.array(files),
        classes=np.array(classes)))


def write_config(run_dir: Path, config: RunConfig) -> dict:
    """``config.json`` from ``config``; returns the JSON object written."""
    obj = config.to_json()
    write_json(run_dir / "config.json", obj)
    return obj


class Claim(NamedTuple):
    """What ``claim`` found: a reusable run's config, or the folder to train in."""

    config: dict  # the complete run's config.json when it is reused, else None
    work: Path  # the folder to train in (the run's own, or a forced retrain's temporary one), else None


@contextlib.contextmanager
def claim(run_dir: Path, identity: dict, force: bool, log, label: str):
    """Hold the run's lock and prepare it: yields a ``Claim``.

    A second process waits for the lock (saying so), then finds the run complete. Holding it, the
    holder first completes a swap a kill interrupted (``features.files.finish_replace``) and removes
    what killed processes left: every temporary entry of this run, whatever the pid in its name,
    other runs' whose owner is gone, a checkpoint of a run that was complete. A complete run of the
    same identity (compared in JSON form) is reused unless ``force``; otherwise the line says why it
    is retrained (which key differs, with both values). A forced retrain of a readable run trains in
    ``.<run>.partial-<pid>``: until ``commit`` the old run stays readable, and a retrain that fails
    leaves it untouched (the temporary folder is removed on the way out). A read-only runs folder
    still serves its complete runs.
    """
    def waiting():
        log(f"{label}: another process is training {run_dir}; waiting for it to finish")

    with folder_lock(run_dir, waiting) as locked:
        if locked:
            finish_replace(run_dir)
            remove_orphans(run_dir, locked)
        found = _prepare(run_dir, canonical(identity), force, locked, log, label)
        try:
            yield found
        finally:
            if found.work is not None and found.work != run_dir:
                shutil.rmtree(found.work, ignore_errors=True)  # a forced retrain never resumes


def commit(run_dir: Path, work: Path) -> None:
    """Put a forced retrain's complete folder ``work`` in place of ``run_dir`` (nothing when they are one)."""
    if work != run_dir:
        replace_folder(run_dir)


def _prepare(run_dir: Path, identity: dict, force: bool, locked: bool, log, label) -> Claim:
    config, why_not = (None, None) if force else _reusable(run_dir, identity)
    if config is not None:
        if locked:
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        log(f"{label}: complete in {run_dir}; skipped (--force retrains)")
        return Claim(config, None)
    if why_not:
        log(f"{label}: {why_not}")
    if force and readable(run_dir):
        work = temp_name(run_dir, "partial")
        work.mkdir()
        return Claim(None, work)
    if (force or why_not) and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Claim(None, run_dir)


def _reusable(run_dir: Path, identity: dict) -> tuple:
    """(config, None) when ``run_dir`` is a complete, verified run of ``identity``, else (None, why not:
    None when there is no complete run)."""
    if not (run_dir / "COMPLETE").exists():
        return None, None
    try:
        checked = verify_run(run_dir)
    except RunError as e:
        return None, f"{e.path}: {e.problem}; retraining"
    if not checked.verified:
        return None, f"{run_dir} has no checksums (made before they were recorded); retraining"
    difference = first_difference(checked.config.get("identity"), identity)
    if difference:
        return None, f"{run_dir} is from other settings or inputs; retraining ({difference})"
    return checked.config, None


# ------------------------------------------------------------------------------------------ finding

def newest(runs: list) -> Run:
    """The run that finished last: ISO timestamps sort as strings; COMPLETE's mtime breaks ties and
    covers a missing ``finished``."""
    return max(runs, key=lambda r: (r.finished, (r.path / "COMPLETE").stat().st_mtime))


def find_runs(runs_root, model=None, data=None, warn=None) -> list:
    """Every complete run under ``runs_root``; anything else there is skipped with a warning.

    Parameters
    ----------
    runs_root : str or Path
        Holds ``<data>/<model>/<split>-<preset>-seed<k>/``.
    model, data : str or None
        Look only under these folders (and warn only about what is there).
    warn : callable
        Receives one line per folder skipped.

    Returns
    -------
    list of Run
        Sorted by data, model, folder name. Folders whose name is not a run's, that lack
        ``COMPLETE`` (unfinished, interrupted, half-deleted) or that fail ``verify_run`` are left out,
        one warning line each; temporary folders (``features.files.TEMP_RE``) silently.
    """
    folders = Path(runs_root).glob(f"{data or '*'}/{model or '*'}/*")
    # a retrain's temporary folder (run_all.py --force) is work in progress, not a stray folder
    found = [_read_run(path, warn) for path in sorted(p for p in folders if p.is_dir() and not TEMP_RE.search(p.name))]
    return [run for run in found if run is not None]


def _read_run(path: Path, warn):
    match = RUN_DIR_RE.match(path.name)
    if match is None or not is_split(match["split"]):
        warn(f"{path}: not a run folder (<split>-<preset>-seed<k>, split one of {', '.join(SPLITS)} "
             f"or k<K>f<i>); skipped")
        return None
    try:
        return verify_run(path)
    except RunError as e:
        warn(f"{e.path}: {e.problem}; skipped — to repair: {e.command}")
        return None


def complete_run_dirs(folder: Path) -> list:
    """The folders ``<folder>/<model>/<run>`` named as runs and holding COMPLETE (not yet verified)."""
    return [p for p in sorted(Path(folder).glob("*/*")) if RUN_DIR_RE.match(p.name) and (p / "COMPLETE").is_file()]


def newest_dir(run_dirs: list) -> Path:
    """The run folder that finished last, by its config's ``finished`` then COMPLETE's mtime."""
    def finished(run):
        try:
            stamp = str(json.loads((run / "config.json").read_text(encoding="utf-8")).get("finished", ""))
        except (OSError, ValueError, AttributeError):
            stamp = ""
        return stamp, (run / "COMPLETE").stat().st_mtime

    return max(run_dirs, key=finished)


def data_folder(runs_root: Path, data: str, hint: str) -> Path:
    """The one data set under ``runs_root`` to predict with (``data`` or the only one there)."""
    if data is not None:
        folder = runs_root / data
        if not complete_run_dirs(folder):
            raise NoRun(f"no complete run under {folder}; `{hint}` trains one")
        return folder
    folders = [d for d in sorted(runs_root.glob("*")) if d.is_dir() and complete_run_dirs(d)]
    if not folders:
        raise NoRun(f"no trained model under {runs_root}/; `{hint}` trains one")
    if len(folders) > 1:
        raise NoRun(f"{runs_root}/ holds runs of several data sets ({', '.join(d.name for d in folders)}); "
                    f"choose one with --data NAME")
    return folders[0]


def choose_runs(runs_root: Path, model: str = None, data: str = None, ensemble: bool = False,
                default: str = "best", note=print) -> list:
    """The run folders to predict with.

    ``model`` (default ``default``): its ``all`` run when there is one, else its newest complete run;
    without ``model`` and with no ``default`` run, the newest complete run of any model (said through
    ``note``). ``ensemble``: every complete run of the model. NoRun when there is none.
    """
    hint = f"python run_all.py --models {default}"
    folder = data_folder(runs_root, data, hint)
    found = [r for r in complete_run_dirs(folder) if r.parent.name == (model or default)]
    if not found and model:
        raise NoRun(f"no complete run of {model} under {folder}; `python run_all.py --models {model}` trains one")
    if not found:
        latest = newest_dir(complete_run_dirs(folder))
        note(f"no {default} run under {folder}; using the newest run, {latest.parent.name}/{latest.name}")
        if not ensemble:
            return [latest]
        found = [r for r in complete_run_dirs(folder) if r.parent == latest.parent]
    if ensemble:
        return found
    deployable = [r for r in found if RUN_DIR_RE.match(r.name)["split"] == DEPLOY_SPLIT]
    return [newest_dir(deployable or found)]


# ------------------------------------------------------------------------------------------ reading files

class Predictions(NamedTuple):
    """One run's ``predictions.npz``: scores (n, C) float32, labels (n,) int64, class names, key."""

    scores: np.ndarray
    labels: np.ndarray
    classes: list
    kind: str
    files: list = None  # the test clips' files, relative to the data folder (None: not recorded)


def load_predictions(run: Run) -> Predictions:
    """The test predictions of one run.

    Returns
    -------
    Predictions
        ``scores`` (n, C) float32 are ``log_probs``, ``probs`` or ``scores`` (SVM decision scores) as
        saved: top-k ranks them directly (exp() of float32 log-probabilities below about -87 is 0,
        which would turn distinct classes into ties). C >= 2 classes, as named in ``classes``.

    Raises
    ------
    RunFileError
        One line naming the file and what is wrong with it.
    """
    path = run.path / "predictions.npz"
    predictions = _check_predictions(*_read_npz(path), path)
    if run.config.get("classes", predictions.classes) != predictions.classes:
        raise RunFileError(f"{path}: classes {predictions.classes} differ from config.json's {run.config['classes']}")
    return predictions


def _read_npz(path):
    """The raw (scores, labels, classes, kind, files) of a ``predictions.npz``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            kind = next((k for k in SCORE_KINDS if k in z.files), None)
            if kind is None or "labels" not in z.files or "classes" not in z.files:
                raise RunFileError(f"{path}: needs one of {', '.join(SCORE_KINDS)}, plus 'labels' and 'classes'")
            files = [str(f) for f in z["files"]] if "files" in z.files else None
            return z[kind], z["labels"], [str(c) for c in z["classes"]], kind, files
    # A truncated or overwritten archive fails in any of these, depending on where the damage is.
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise RunFileError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None


def _check_predictions(scores, labels, classes, kind, files, path):
    """``Predictions`` from the raw arrays, after checking their shapes, ranges and values."""
    n_classes = len(classes)
    if n_classes < 2 or len(set(classes)) != n_classes:
        raise RunFileError(f"{path}: 'classes' must list two or more distinct names, got {classes}")
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise RunFileError(f"{path}: {kind} has shape {scores.shape}, expected (n, {n_classes}) for the "
                           f"{n_classes} classes")
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or not len(labels):
        raise RunFileError(f"{path}: labels {labels.dtype}{labels.shape} do not match {kind} {scores.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise RunFileError(f"{path}: labels outside 0..{n_classes - 1}")
    # log(0) = -inf is a legitimate log-probability; NaN or +inf never is.
    bad = np.isnan(scores) | (scores == np.inf) if kind == "log_probs" else ~np.isfinite(scores)
    if bad.any():
        raise RunFileError(f"{path}: {kind} has {int(bad.sum())} invalid values (NaN or infinite)")
    if files is not None and len(files) != len(labels):
        raise RunFileError(f"{path}: {len(files)} files for {len(labels)} labels")
    return Predictions(scores.astype(np.float32), labels.astype(np.int64), classes, kind, files)


def load_history(path) -> dict:
    """A ``history.csv`` as float arrays (empty cells -> NaN).

    Returns
    -------
    dict of str -> np.ndarray, shape (n_epochs,)
        Keys ``HISTORY_COLUMNS``; ``test_acc_monitor`` is all NaN in older histories, which lack it.
    """
    required = tuple(c for c in HISTORY_COLUMNS if c != MONITOR_COLUMN)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunFileError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if not rows or not set(required) <= set(rows[0]):
        raise RunFileError(f"{path}: needs a header {','.join(required)}[,{MONITOR_COLUMN}] and rows")
    try:
        return {c: np.array([float(r[c]) if r.get(c) not in ("", None) else np.nan for r in rows])
                for c in required + (MONITOR_COLUMN,)}
    except ValueError as e:
        raise RunFileError(f"{path}: not a number ({e})") from None


def load_histories(run: Run) -> tuple:
    """(``history.csv``, ``history_final.csv``) of a run as ``load_history`` reads them, each None
    when the run has none (the SVM has no epochs; only a retrain on train+val has a final one)."""
    main, final = (run.path / name for name in ("history.csv", "history_final.csv"))
    return (load_history(main) if main.exists() else None), (load_history(final) if final.exists() else None)
