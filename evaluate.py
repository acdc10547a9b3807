"""The report's tables and figures from saved runs, in seconds, never retraining.

Reads the run folders ``run_all.py`` writes, ``runs/<data>/<model>/<split>-<preset>-seed<k>/``
(``config.json``, ``history.csv``, optional ``history_final.csv``, ``predictions.npz``), counting only
those that hold ``COMPLETE``, and prints for each model and split:

- scikit-learn's ``classification_report`` with the class names (2 decimals, as the report printed it),
  its macro average taken over the classes present in the test labels;
- per-class precision and recall (the report's "Accuracy for blues is: ..." is per-class *precision*);
- the confusion matrix (rows true, columns predicted);
- top-1/2/3 accuracy from the saved log-probabilities, probabilities or SVM scores, with the semantics
  of ``sklearn.metrics.top_k_accuracy_score`` (ties go to the higher class index);
- ours beside the report's figure; mean +- std (ddof=1) and per-run values when several seeds or
  folds ran.

Any number of classes (two or more) works: the class names come from ``predictions.npz``. Runs of
different data or presets are never pooled: by default the data of the newest complete run is used,
and for each model and split the preset of its newest run (``--data``/``--preset`` choose). The
folds ``k<K>f0 .. k<K>f<K-1>`` of one model and preset form one group, split ``k<K>``: top-k is given
as mean +- std over the folds (over seeds of the fold means when several seeds ran). Within a group
the runs' test predictions are pooled for the classification report and the confusion matrix
(labelled as such). Runs of split ``all`` have no test part: they are listed as deployable, never
evaluated. A folder that is not a complete run, that fails ``models.runfiles.verify_run`` (the sha256
of every file recorded in ``COMPLETE``, the structure of ``config.json``), or whose files cannot be read,
is skipped with one line on stderr naming the file and the command that repairs it. Runs made before
checksums were recorded (an empty ``COMPLETE``) are read unverified, structure-checked, and counted in
one note (``unverified_runs`` in the JSON).

Figures (PNG, ``reports/`` or ``--out``): ``confusion_<model>_<split>.png``,
``curves_<model>_<split>.png`` (loss and accuracy vs epoch, early stop marked) and, with ``--pca``,
``pca.png`` (first two principal components of the 400x400x3 images, coloured by class). ``--all``
also writes ``summary.md`` beside them: every table and figure on one page.

Usage::

    python evaluate.py                      # every model x split: one table + figures
    python evaluate.py --model cnn2d        # the full text for one model
    python evaluate.py --all --json         # the same numbers, machine-readable, + summary.md
    python evaluate.py --pca                # PCA figure from the runs' cache folder's img400.npy
"""
import argparse
import csv
import json
import re
import sys
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from features import TEMP_RE, atomic_write
from models import MODELS, REPORTED, rank_classes, top_k_accuracy
from models.hparams import FOLD_RE, RUN_DIR_RE, SPLITS, is_split
from models.runfiles import RunError, verify_run

TOPK = (1, 2, 3)
# Trained on every clip: nothing to test, the model to deploy.
DEPLOY_SPLIT = "all"
# The first key present wins: new torch runs, old torch runs, SVM decision scores.
SCORE_KINDS = ("log_probs", "probs", "scores")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "seconds")
MONITOR_COLUMN = "test_acc_monitor"   # newer histories only
MONITOR_LABEL = "test accuracy (monitoring only, not used for any decision)"
# run_all.py's svm400 is the report's SVM on the flattened 400x400x3 image; our svm uses 360x120x3.
SVM400 = "svm400"
SVM400_NOTE = "report's SVM on the 400x400x3 image"
PCA_REPORTED = "report: 51.56 % on GTZAN"


class EvaluateError(Exception):
    """Bad or missing input; ``str()`` is the one line shown to the user."""


class Run(NamedTuple):
    """One complete run folder; ``k``/``fold`` are set for a fold ``k<K>f<i>`` of K-fold CV."""

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
    verified: bool = True  # False: made before checksums were recorded (structure-checked only)

    @property
    def group_split(self):
        """The split the run is grouped under: ``k<K>`` for a fold, else its own split."""
        return self.split if self.k is None else f"k{self.k}"


class Group(NamedTuple):
    """The runs (seeds, folds) that are pooled: same data, model, split, preset and config_hash."""

    data: str
    model: str
    split: str
    preset: str
    runs: list
    set_aside: int
    other_presets: list


class Predictions(NamedTuple):
    """One run's ``predictions.npz``: scores (n, C) float32, labels (n,) int64, class names, key."""

    scores: np.ndarray
    labels: np.ndarray
    classes: list
    kind: str


def warn(message):
    """One line on stderr: something was skipped, the rest goes on."""
    print(f"evaluate.py: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- metrics

def mean_std(values):
    """Mean and sample std (ddof=1) over runs (axis 0); std is None for a single run.

    Parameters
    ----------
    values : array_like, shape (n_runs,) or (n_runs, n_classes)

    Returns
    -------
    mean, std : float or list of float (std None when n_runs == 1)
    """
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1).tolist() if len(values) > 1 else None
    return values.mean(axis=0).tolist(), std


def spread(values, runs):
    """Mean +- std of per-run values: over seeds, over folds, or over seeds of the fold means.

    Parameters
    ----------
    values : list of float or list of list of float
        One entry per run, aligned with ``runs``.
    runs : list of Run

    Returns
    -------
    dict
        ``mean``, ``std`` (None for one value), ``per_run`` (``values``), ``over`` (what the std is
        over) and, for folds of several seeds, ``per_seed`` (each seed's mean over its folds).
    """
    seeds = sorted({r.seed for r in runs})
    if runs[0].k is None or len(seeds) == 1:
        mean, std = mean_std(values)
        over = "seeds" if runs[0].k is None else "folds"
        return {"mean": mean, "std": std, "per_run": values, "over": over}
    # Folds of one seed share its test-set assignment, so seeds are the independent repeats.
    per_seed = [np.mean([v for v, r in zip(values, runs) if r.seed == s], axis=0).tolist() for s in seeds]
    mean, std = mean_std(per_seed)
    return {"mean": mean, "std": std, "per_run": values, "over": "seeds of fold means", "per_seed": per_seed}


def report_dict(labels, preds, classes):
    """sklearn's ``classification_report`` dict, its macro average over the classes present.

    A class absent from the test labels has no recall; counting it as 0 (sklearn's
    ``zero_division=0`` over all labels) would pull the macro average down for nothing the model did.

    Returns
    -------
    report : dict
        As ``classification_report(..., output_dict=True)`` over every class.
    present : list of str
        The classes the macro average is over.
    """
    ids = list(range(len(classes)))
    report = classification_report(labels, preds, labels=ids, target_names=classes, zero_division=0,
                                   output_dict=True)
    present_ids = sorted(set(np.asarray(labels).tolist()))
    macro = precision_recall_fscore_support(labels, preds, labels=present_ids, average="macro", zero_division=0)
    report["macro avg"] = {"precision": float(macro[0]), "recall": float(macro[1]), "f1-score": float(macro[2]),
                           "support": report["macro avg"]["support"]}
    return report, [classes[i] for i in present_ids]


def report_text(report, classes, digits=2):
    """``report_dict``'s report in ``classification_report``'s text layout (the same text when every
    class is present)."""
    headers = ("precision", "recall", "f1-score", "support")
    width = max(*(len(c) for c in classes), len("weighted avg"), digits)
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    text = ("{:>{width}s} " + " {:>9}" * 4).format("", *headers, width=width) + "\n\n"
    for name in classes:
        text += row.format(name, *(report[name][h] for h in headers[:3]), int(report[name]["support"]),
                           width=width, digits=digits)
    text += "\n" + ("{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
        "accuracy", "", "", report["accuracy"], int(report["macro avg"]["support"]), width=width, digits=digits)
    for name in ("macro avg", "weighted avg"):
        text += row.format(name, *(report[name][h] for h in headers[:3]), int(report[name]["support"]),
                           width=width, digits=digits)
    return text


# ---------------------------------------------------------------------------------------------- reading

def run_command(model=None, split=None, run=None, force=False):
    """The ``run_all.py`` command that produces (or, with ``force``, retrains) the missing runs.

    Parameters
    ----------
    model, split : str or None
    run : Run or dict or None
        A run (or the parsed fields of its folder: ``model``, ``split``, ``preset``, ``seed``) to
        name exactly, with its data folder when its config recorded one.
    force : bool
        Add ``--force`` (a complete run with a damaged file is otherwise skipped as complete).
    """
    fields = run._asdict() if isinstance(run, Run) else dict(run or {})
    model, split = fields.get("model", model), fields.get("split", split)
    command = "python run_all.py"
    command += f" --models {model}" if model else ""
    command += f" --split {split}" if split else ""
    command += f" --preset {fields['preset']}" if fields.get("preset") else ""
    command += f" --seed {fields['seed']}" if fields.get("seed") is not None else ""
    data_root = ((fields.get("config") or {}).get("data") or {}).get("data_root")
    command += f" --data {data_root}" if data_root else ""
    return command + (" --force" if force else "")


def _read_json(path):
    """A JSON object from ``path``; anything else raises EvaluateError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{path}: cannot read JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(value, dict):
        raise EvaluateError(f"{path}: expected a JSON object")
    return value


def find_runs(runs_root, model=None, data=None):
    """Every complete run under ``runs_root``; anything else there is skipped with a warning.

    Parameters
    ----------
    runs_root : str or Path
        Holds ``<data>/<model>/<split>-<preset>-seed<k>/``.
    model, data : str or None
        Look only under these folders (and warn only about what is there).

    Returns
    -------
    list of Run
        Sorted by data, model, folder name. Folders whose name is not a run's, that lack
        ``COMPLETE`` (unfinished, interrupted, half-deleted) or whose ``config.json`` cannot be read
        are left out, one warning line each; temporary folders (``features.TEMP_RE``) silently.
    """
    folders = Path(runs_root).glob(f"{data or '*'}/{model or '*'}/*")
    # a retrain's temporary folder (run_all.py --force) is work in progress, not a stray folder
    runs = [_read_run(path) for path in sorted(p for p in folders if p.is_dir() and not TEMP_RE.search(p.name))]
    return [run for run in runs if run is not None]


def _read_run(path):
    """The Run in folder ``path``, or None (with a warning) when it is not a complete run that passes
    ``models.runfiles.verify_run`` (checksums, config structure)."""
    match = RUN_DIR_RE.match(path.name)
    if match is None or not is_split(match["split"]):
        warn(f"{path}: not a run folder (<split>-<preset>-seed<k>, split one of {', '.join(SPLITS)} "
             f"or k<K>f<i>); skipped")
        return None
    try:
        checked = verify_run(path)
    except RunError as e:
        warn(f"{e.path}: {e.problem}; skipped — to repair: {e.command}")
        return None
    fold = FOLD_RE.match(match["split"])
    config = checked.config
    return Run(path, path.parent.parent.name, path.parent.name, match["split"], match["preset"],
               int(match["seed"]), config, finished=str(config.get("finished", "")),
               k=int(fold["k"]) if fold else None, fold=int(fold["fold"]) if fold else None,
               verified=checked.checksums is not None)


def _newest(runs):
    # ISO timestamps sort as strings; COMPLETE's mtime breaks ties and covers a missing "finished".
    return max(runs, key=lambda r: (r.finished, (r.path / "COMPLETE").stat().st_mtime))


def filter_runs(runs, model=None, split=None, preset=None, data=None):
    """The runs matching every filter given; ``split`` may name a fold group (``k5``) or one fold."""
    return [r for r in runs if (model is None or r.model == model)
            and (split is None or split in (r.split, r.group_split))
            and (preset is None or r.preset == preset) and (data is None or r.data == data)]


def select_groups(runs, model=None, split=None, preset=None, data=None):
    """Choose what to evaluate: one group per model and split, never mixing data or presets.

    Parameters
    ----------
    runs : list of Run
        Runs of split ``all`` are ignored (nothing to test).
    model, split, preset, data : str or None
        Filters; ``data`` defaults to that of the newest matching run, ``preset`` (per model and
        split) to that of the newest run of that model and split.

    Returns
    -------
    list of Group
        Models in ``MODELS`` order, then svm400, then the others alphabetically; splits in ``SPLITS``
        order, then fold groups. Within a group only runs with the newest run's ``config_hash`` are
        kept (``set_aside`` counts the others: built on other features).
    """
    runs = [r for r in filter_runs(runs, model, split, preset, data) if r.split != DEPLOY_SPLIT]
    if not runs:
        return []
    data = data or _newest(runs).data
    runs = [r for r in runs if r.data == data]
    groups = []
    for key in sorted({(r.model, r.group_split) for r in runs}, key=_model_split_order):
        same = [r for r in runs if (r.model, r.group_split) == key]
        chosen = preset or _newest(same).preset
        members = [r for r in same if r.preset == chosen]
        config_hash = _config_hash(_newest(members))
        kept = sorted((r for r in members if _config_hash(r) == config_hash), key=lambda r: (r.seed, r.fold or 0))
        others = sorted({r.preset for r in same} - {chosen})
        groups.append(Group(data, key[0], key[1], chosen, kept, len(members) - len(kept), others))
    return groups


def _config_hash(run):
    # The feature cache the run was trained on, as models/train.py records it.
    return (run.config.get("data") or {}).get("config_hash")


def model_order(model):
    """Sort key: the report's five in ``MODELS`` order, then svm400, then any other alphabetically."""
    if model in MODELS:
        return (0, MODELS.index(model), "")
    return (1, 0, "") if model == SVM400 else (2, 0, model)


def _model_split_order(key):
    """Sort key of (model, split): ``model_order``, then ``SPLITS`` order, then fold groups by K."""
    model, split = key
    fold_k = re.fullmatch(r"k(\d+)", split)
    split_key = (SPLITS.index(split), 0) if split in SPLITS else (len(SPLITS), int(fold_k[1]) if fold_k else 0)
    return model_order(model), split_key, split


def load_predictions(run):
    """The test predictions of one run.

    Parameters
    ----------
    run : Run

    Returns
    -------
    Predictions
        ``scores`` (n, C) float32 are ``log_probs``, ``probs`` or ``scores`` (SVM decision scores) as
        saved: top-k ranks them directly (exp() of float32 log-probabilities below about -87 is 0,
        which would turn distinct classes into ties). C >= 2 classes, as named in ``classes``.

    Raises
    ------
    EvaluateError
        One line naming the file and what is wrong with it.
    """
    path = run.path / "predictions.npz"
    predictions = _check_predictions(*_read_npz(path), path)
    if run.config.get("classes", predictions.classes) != predictions.classes:
        raise EvaluateError(f"{path}: classes {predictions.classes} differ from config.json's {run.config['classes']}")
    return predictions


def _read_npz(path):
    """The raw (scores, labels, classes, kind) of a ``predictions.npz``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            kind = next((k for k in SCORE_KINDS if k in z.files), None)
            if kind is None or "labels" not in z.files or "classes" not in z.files:
                raise EvaluateError(f"{path}: needs one of {', '.join(SCORE_KINDS)}, plus 'labels' and 'classes'")
            return z[kind], z["labels"], [str(c) for c in z["classes"]], kind
    # A truncated or overwritten archive fails in any of these, depending on where the damage is.
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise EvaluateError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None


def _check_predictions(scores, labels, classes, kind, path):
    """``Predictions`` from the raw arrays, after checking their shapes, ranges and values."""
    n_classes = len(classes)
    if n_classes < 2 or len(set(classes)) != n_classes:
        raise EvaluateError(f"{path}: 'classes' must list two or more distinct names, got {classes}")
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise EvaluateError(f"{path}: {kind} has shape {scores.shape}, expected (n, {n_classes}) for the "
                            f"{n_classes} classes")
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or not len(labels):
        raise EvaluateError(f"{path}: labels {labels.dtype}{labels.shape} do not match {kind} {scores.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise EvaluateError(f"{path}: labels outside 0..{n_classes - 1}")
    # log(0) = -inf is a legitimate log-probability; NaN or +inf never is.
    bad = np.isnan(scores) | (scores == np.inf) if kind == "log_probs" else ~np.isfinite(scores)
    if bad.any():
        raise EvaluateError(f"{path}: {kind} has {int(bad.sum())} invalid values (NaN or infinite)")
    return Predictions(scores.astype(np.float32), labels.astype(np.int64), classes, kind)


def load_history(path):
    """A ``history.csv`` as float arrays (empty cells -> NaN).

    Returns
    -------
    dict of str -> np.ndarray, shape (n_epochs,)
        Keys ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``seconds`` and
        ``test_acc_monitor`` (all NaN in older histories, which lack the column).
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EvaluateError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if not rows or not set(HISTORY_COLUMNS) <= set(rows[0]):
        raise EvaluateError(f"{path}: needs a header {','.join(HISTORY_COLUMNS)}[,{MONITOR_COLUMN}] and rows")
    try:
        return {c: np.array([float(r[c]) if r.get(c) not in ("", None) else np.nan for r in rows])
                for c in HISTORY_COLUMNS + (MONITOR_COLUMN,)}
    except ValueError as e:
        raise EvaluateError(f"{path}: not a number ({e})") from None


# ---------------------------------------------------------------------------------------------- numbers

def _load_members(group):
    """(run, Predictions) for every readable run of the group with the first run's classes."""
    members = []
    for run in group.runs:
        try:
            predictions = load_predictions(run)
        except EvaluateError as e:
            warn(f"{e}; skipped — to repair: {run_command(run=run, force=True)}")
            continue
        if members and predictions.classes != members[0][1].classes:
            warn(f"{run.path}/predictions.npz: classes {predictions.classes} differ from "
                 f"{members[0][1].classes} of {members[0][0].path.name}; skipped")
            continue
        members.append((run, predictions))
    return members


def evaluate_group(group):
    """Every number the report shows for one group of seeds or folds.

    Returns
    -------
    dict or None
        None when no run of the group could be read (each already warned about). Otherwise JSON-ready:
        ``topk_percent[f"top{k}"]`` is ``spread`` of the per-run percentages; ``per_class``
        precision/recall (fractions) on the runs' predictions pooled and per run;
        ``classification_report`` (sklearn's ``output_dict``, macro over ``macro_avg_classes``) and
        ``confusion`` (rows true, columns predicted) on the pooled predictions; ``report`` the
        report's figures (percent).
    """
    members = _load_members(group)
    if not members:
        return None
    runs = [run for run, _ in members]
    classes = members[0][1].classes
    # The predicted class is rank 0 of the same ordering as top-k, so accuracy == top-1 even on ties.
    preds = [rank_classes(p.scores)[:, 0] for _, p in members]
    labels_all = np.concatenate([p.labels for _, p in members])
    preds_all = np.concatenate(preds)
    topk = {f"top{k}": spread([100.0 * top_k_accuracy(p.labels, p.scores, k) for _, p in members], runs)
            for k in TOPK}
    report, present = report_dict(labels_all, preds_all, classes)
    reported = REPORTED.get((group.model, group.split))
    extra = REPORTED.get((SVM400, group.split)) if group.model == "svm" else None
    return {
        "data": group.data, "model": group.model, "split": group.split, "preset": group.preset,
        "k": runs[0].k, "seeds": [r.seed for r in runs], "folds": [r.fold for r in runs],
        "runs": [str(r.path) for r in runs], "n_test": [len(p.labels) for _, p in members],
        "score_kind": members[0][1].kind, "config_hash": _config_hash(runs[0]),
        "set_aside_runs": group.set_aside, "other_presets": group.other_presets,
        "unreadable_runs": len(group.runs) - len(runs),
        "unverified_runs": sum(not r.verified for r in runs),
        **{key: [r.config.get(key) for r in runs] for key in ("epochs_run", "stopped_early", "final_epochs",
                                                                "wall_seconds")},
        "cache_dir": (runs[0].config.get("data") or {}).get("cache_dir"),
        "classes": classes,
        "topk_percent": topk,
        "report": None if reported is None else dict(zip(("top1", "top2", "top3"), reported)),
        "report_svm400": None if extra is None else dict(zip(("top1", "top2", "top3"), extra)),
        "per_class": _per_class(members, preds, labels_all, preds_all),
        "classification_report": report, "macro_avg_classes": present,
        "classification_report_text": report_text(report, classes),
        "confusion": confusion_matrix(labels_all, preds_all, labels=range(len(classes))).tolist(),
    }


def _per_class(members, preds, labels_all, preds_all):
    """Per-class precision and recall: pooled over the runs, per run, and their ``spread``."""
    ids = list(range(len(members[0][1].classes)))

    def precision_recall(labels, pred):
        return precision_recall_fscore_support(labels, pred, labels=ids, average=None, zero_division=0)[:2]

    runs = [run for run, _ in members]
    per_run = [precision_recall(p.labels, pred) for (_, p), pred in zip(members, preds)]
    pooled = precision_recall(labels_all, preds_all)
    per_class = {}
    for i, name in enumerate(("precision", "recall")):
        stat = spread([pr[i].tolist() for pr in per_run], runs)
        per_class.update({name: pooled[i].tolist(), f"{name}_per_run": stat["per_run"],
                          f"{name}_mean": stat["mean"], f"{name}_std": stat["std"]})
    return per_class


# ---------------------------------------------------------------------------------------------- text

def protocol_note(data, preset):
    """One line saying whether these numbers follow the report's protocol."""
    if data == "gtzan" and preset == "report":
        return "protocol: GTZAN with the report's settings (preset report)"
    return (f"NOTE: preset {preset!r} on data {data!r}: not the report's protocol "
            f"(GTZAN, preset report); the report's figures are shown for reference only")


def _fmt(stat, digits=2):
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def fold_coverage(result):
    """For a fold group, e.g. ``"5 folds"`` or ``"3 of 5 folds (0, 1, 3)"``; None otherwise."""
    k = result["k"]
    if k is None:
        return None
    folds = sorted(set(result["folds"]))
    seeds = sorted(set(result["seeds"]))
    short = [s for s in seeds if len({f for f, x in zip(result["folds"], result["seeds"]) if x == s}) < k]
    if not short:
        return f"{k} folds"
    if len(seeds) == 1:
        return f"{len(folds)} of {k} folds ({', '.join(map(str, folds))})"
    return f"{k} folds, incomplete for seed {', '.join(map(str, short))}"


def runs_label(result):
    """What the runs are: ``seed 0``, ``3 seeds``, ``5 folds``, ``2 seeds x 5 folds``, ``3 of 5 folds (...)``."""
    seeds = sorted(set(result["seeds"]))
    base = f"{len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    coverage = fold_coverage(result)
    if coverage is None:
        return base
    return coverage if len(seeds) == 1 else f"{base} x {coverage}"


def pooled_label(result):
    """How a pooled figure was made, e.g. ``"the 3 seeds' test predictions together, "``; empty for one run."""
    n = len(result["runs"])
    if n == 1:
        return ""
    if result["k"] is None:
        return f"the {n} seeds' test predictions together, "
    return f"pooled test predictions of {runs_label(result)}, "


def _run_tag(seed, fold, several_seeds=True):
    """Short name of a run in the per-run lists: ``seed0``, ``f2`` or ``f2/seed1``."""
    if fold is None:
        return f"seed{seed}"
    return f"f{fold}" + (f"/seed{seed}" if several_seeds else "")


def confusion_table(confusion, classes):
    """The confusion matrix as a labelled text table (rows true, columns predicted)."""
    width = max(max(len(c) for c in classes), len(str(np.max(confusion))) + 1, 5)
    corner = "true \\ pred"
    lines = [f"{corner:>{width}s} " + " ".join(f"{c:>{width}s}" for c in classes)]
    lines += [f"{name:>{width}s} " + " ".join(f"{v:>{width}d}" for v in row)
              for name, row in zip(classes, confusion)]
    return "\n".join(lines)


def comparison_lines(result):
    """One line per report figure: ours vs the report's, with the difference in points."""
    label = runs_label(result)
    lines = []
    for name, report in (("report", result["report"]), (SVM400_NOTE, result["report_svm400"])):
        for k in TOPK:
            ours = result["topk_percent"][f"top{k}"]
            figure = None if report is None else report[f"top{k}"]
            if figure is None:
                if name == "report":
                    lines.append(f"top-{k}: ours {_fmt(ours, 1)} % ({label}) vs {name}: no figure")
                continue
            lines.append(f"top-{k}: ours {_fmt(ours, 1)} % ({label}) vs {name} {figure} % "
                         f"({ours['mean'] - figure:+.1f} points)")
    return lines


def _header_lines(result):
    """The group's title line, protocol note and what was set aside or left out."""
    split = result["split"]
    if result["k"] is not None:
        split += f" ({result['k']}-fold cross-validation: {fold_coverage(result)})"
    out = [f"== {result['model']}  split {split}  preset {result['preset']}  data {result['data']}  "
           f"seeds {' '.join(map(str, sorted(set(result['seeds']))))}  "
           f"n_test {'/'.join(map(str, result['n_test']))} ==",
           protocol_note(result["data"], result["preset"])]
    if result["set_aside_runs"]:
        out.append(f"({result['set_aside_runs']} older run(s) built on other features set aside)")
    if result["unreadable_runs"]:
        out.append(f"({result['unreadable_runs']} run(s) with unreadable predictions left out, see the warnings)")
    if result["other_presets"]:
        out.append(f"(also run with preset {', '.join(result['other_presets'])}: use --preset)")
    return out


def _per_class_lines(result):
    """The report's per-class lines (precision, recall; mean +- std when several runs)."""
    pc, several = result["per_class"], len(result["runs"]) > 1
    over = f" over {result['topk_percent']['top1']['over']}"
    lines = []
    for i, name in enumerate(result["classes"]):
        line = f"Precision for {name} is: {pc['precision'][i]:.2f}"
        if several:
            line += f" ({pc['precision_mean'][i]:.2f} ± {pc['precision_std'][i]:.2f}{over})"
        line += f"   recall for {name} is: {pc['recall'][i]:.2f}"
        if several:
            line += f" ({pc['recall_mean'][i]:.2f} ± {pc['recall_std'][i]:.2f}{over})"
        lines.append(line)
    return lines


def _topk_lines(result):
    """Top-1/2/3 in %, with the per-run values and, for folds of several seeds, each seed's fold mean."""
    first = result["topk_percent"]["top1"]
    several = len(result["runs"]) > 1
    lines = ["Top-k accuracy (%)" + (f", mean ± std (ddof=1) over {first['over']}:" if several else ":")]
    many_seeds = len(set(result["seeds"])) > 1
    for k in TOPK:
        stat = result["topk_percent"][f"top{k}"]
        line = f"top-{k}: {_fmt(stat)}"
        if several:
            line += "   per run: " + ", ".join(f"{_run_tag(s, f, many_seeds)} {v:.2f}" for s, f, v in
                                               zip(result["seeds"], result["folds"], stat["per_run"]))
        if "per_seed" in stat:
            line += "   fold mean per seed: " + ", ".join(
                f"seed{s} {v:.2f}" for s, v in zip(sorted(set(result["seeds"])), stat["per_seed"]))
        lines.append(line)
    return lines


def format_group(result):
    """The full report-style text for one group (see the module docstring)."""
    pooled = pooled_label(result)
    out = _header_lines(result)
    out += ["", f"Classification report ({pooled}n={sum(result['n_test'])}):", result["classification_report_text"]]
    absent = [c for c in result["classes"] if c not in result["macro_avg_classes"]]
    if absent:
        out.append(f"(macro avg over the {len(result['macro_avg_classes'])} classes present in the test labels; "
                   f"absent: {', '.join(absent)})")
    out += ["Per class. The report's \"Accuracy for <genre> is: ...\" is this precision; recall is "
            "the fraction of the class's clips found:"]
    out += _per_class_lines(result)
    out += ["", f"Confusion matrix (rows true, columns predicted; {pooled}counts):",
            confusion_table(result["confusion"], result["classes"]), ""]
    out += _topk_lines(result)
    out += ["", f"Ours (preset {result['preset']}, data {result['data']}) vs the report "
                f"(split {result['split']}):"]
    out += comparison_lines(result)
    return "\n".join(out)


def table_lines(results):
    """``--all``: every evaluated model x split, the report's figure beside ours (top-k in %).

    The report's figures for model/split pairs without a run are listed as "not run".
    """
    head = ["model", "split", "preset", "data", "seeds"] + [h for k in TOPK for h in (f"top-{k}", "report")]

    def report_cells(report):
        return ["-" if report is None or report[i] is None else str(report[i]) for i in range(3)]

    rows = []
    for r in results:
        reported = None if r["report"] is None else [r["report"][f"top{k}"] for k in TOPK]
        ours = [_fmt(r["topk_percent"][f"top{k}"], 1) for k in TOPK]
        split = r["split"] if r["k"] is None else f"{r['split']} ({fold_coverage(r)})"
        rows.append([r["model"], split, r["preset"], r["data"], str(len(set(r["seeds"])))]
                    + [c for pair in zip(ours, report_cells(reported)) for c in pair])
    done = {(r["model"], r["split"]) for r in results}
    for model, split in (key for key in REPORTED if key not in done):
        rows.append([model, split, "not run", "", ""]
                    + [c for pair in zip(["", "", ""], report_cells(REPORTED[(model, split)])) for c in pair])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return lines + ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]


def table_notes(results):
    """The notes under ``table_lines``: units, protocol, svm400 and how to fill the 'not run' rows."""
    notes = ["top-k accuracy in %; ours is mean ± std (ddof=1) over seeds when several ran"]
    if any(r["k"] is not None for r in results):
        notes.append("k<K> rows: mean ± std over the folds (over seeds of the fold means when several seeds "
                     "ran); seeds counts the seeds")
    notes += sorted({protocol_note(r["data"], r["preset"]) for r in results})
    notes.append(f"{SVM400} is the {SVM400_NOTE}; run_all.py's svm uses the 360x120x3 image (report: 64 %)")
    done = {(r["model"], r["split"]) for r in results}
    runnable = sorted({m for m, s in REPORTED if (m, s) not in done}, key=model_order)
    if runnable:
        notes.append("to fill the 'not run' rows: " + run_command(",".join(runnable))
                     + " (with --split as each row says)")
    return notes


def format_table(results):
    """``table_lines`` and ``table_notes`` as text."""
    return "\n".join(table_lines(results) + [""] + table_notes(results))


def deployable_line(runs):
    """One line naming the runs of split ``all`` (trained on every clip, nothing to test)."""
    names = ", ".join(f"{r.model}/{r.path.name}" for r in sorted(runs, key=lambda r: (model_order(r.model),
                                                                                      r.path.name)))
    return f"deployable runs (split {DEPLOY_SPLIT}: trained on every clip, no test part, not evaluated): {names}"


# ---------------------------------------------------------------------------------------------- figures

def save_figure(fig, path):
    """Write ``fig`` as a PNG atomically (``features.atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def _label(result):
    return (f"{result['model']}, split {result['split']} — preset {result['preset']}, data {result['data']}, "
            f"{runs_label(result)}")


def class_colors(n):
    """n distinguishable colours: tab10 up to 10, tab20 up to 20, evenly sampled turbo beyond."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        # tab20's dark shades first: the first ten classes get ten distinct hues, as with tab10.
        return [colormaps["tab20"](i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def plot_confusion(result, path):
    """Confusion-matrix heatmap labelled with class names and counts (rows true, columns predicted).

    The figure grows with the class count and the count font shrinks, so 2 to 20+ classes stay legible.
    """
    cm = np.asarray(result["confusion"])
    classes = result["classes"]
    n = len(classes)
    side = max(4.5, 2.5 + 0.55 * n)
    fig = Figure(figsize=(side + 1.8, side + 0.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="clips")
    threshold = cm.max() / 2 if cm.max() else 1
    fontsize = 9 if n <= 12 else max(5, 9 - (n - 12) // 4)
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=fontsize,
                color="white" if value > threshold else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=fontsize + 1)
    ax.set_yticks(range(n), classes, fontsize=fontsize + 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    together = f" ({pooled_label(result).rstrip(', ')})" if len(result["runs"]) > 1 else ""
    top1 = _fmt(result["topk_percent"]["top1"], 1)
    ax.set_title(f"{_label(result)}\ntest confusion matrix{together}, top-1 {top1} %", fontsize=9)
    return save_figure(fig, path)


def _percent(acc):
    # Histories may store accuracy as a fraction or in percent; plot percent either way.
    finite = acc[np.isfinite(acc)]
    return acc * 100.0 if finite.size and finite.max() <= 1.0 else acc


def _histories(group):
    """(run, history, final history or None) for each run with a readable ``history.csv``."""
    out = []
    for run in group.runs:
        if not (run.path / "history.csv").exists():
            continue   # the SVM has no epochs
        try:
            history = load_history(run.path / "history.csv")
            final = run.path / "history_final.csv"
            out.append((run, history, load_history(final) if final.exists() else None))
        except EvaluateError as e:
            warn(f"{e}; curves drawn without this run — to repair: {run_command(run=run, force=True)}")
    return out


def _plot_run_curves(ax_loss, ax_acc, run, h, final, color, tag):
    """One run's lines: train, validation, test monitor, retrain and early stop, in one colour."""
    ax_loss.plot(h["epoch"], h["train_loss"], color=color, label=f"train ({tag})")
    ax_acc.plot(h["epoch"], _percent(h["train_acc"]), color=color, label=f"train ({tag})")
    if np.isfinite(h["val_acc"]).any():
        ax_acc.plot(h["epoch"], _percent(h["val_acc"]), color=color, ls="--", label=f"validation ({tag})")
    if np.isfinite(h[MONITOR_COLUMN]).any():
        ax_acc.plot(h["epoch"], _percent(h[MONITOR_COLUMN]), color=color, ls=(0, (1, 1)), lw=1.6,
                    label=f"{MONITOR_LABEL} ({tag})")
    if final is not None:
        ax_loss.plot(final["epoch"], final["train_loss"], color=color, ls=":", label=f"retrain train+val ({tag})")
        ax_acc.plot(final["epoch"], _percent(final["train_acc"]), color=color, ls=":",
                    label=f"retrain train+val ({tag})")
    if run.config.get("stopped_early") and run.config.get("epochs_run"):
        stop = run.config["epochs_run"]
        for ax in (ax_loss, ax_acc):
            ax.axvline(stop, color=color, ls="-.", lw=1, alpha=0.7, label=f"early stop, epoch {stop} ({tag})")


def plot_curves(group, result, path):
    """Training loss, and training & validation accuracy, vs epoch (the report's Figures 2-9).

    One colour per run (seed or fold); a test-accuracy column kept for monitoring is drawn densely
    dotted and labelled as such; a retrain on train+val (``history_final.csv``) is dotted; the epoch
    at which the stopping rule fired is marked. Returns None when no run has a readable history.
    """
    histories = _histories(group)
    if not histories:
        return None
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = class_colors(len(histories))
    many_seeds = len({run.seed for run, _, _ in histories}) > 1
    for (run, h, final), color in zip(histories, colors):
        tag = f"seed {run.seed}" if run.fold is None else \
            f"fold {run.fold}" + (f", seed {run.seed}" if many_seeds else "")
        _plot_run_curves(ax_loss, ax_acc, run, h, final, color, tag)
    ax_loss.set_ylabel("training loss")
    ax_acc.set_ylabel("accuracy (%)")
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.03)   # keeps an early-stop line on the last epoch off the frame
        ax.set_title(f"{what} vs epoch", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6 if len(histories) > 3 else 7, ncol=2 if len(histories) > 3 else 1)
    fig.suptitle(_label(result), fontsize=11)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- PCA

def pca_scores(images, n_components=2, chunk_features=24_000):
    """Exact PCA of images via the centred Gram matrix, streamed in float32 feature chunks.

    With n samples and d = H*W*C features (1000 x 480000 for GTZAN's 400x400x3 images) the n x n Gram
    matrix of the centred data has the same non-zero spectrum as the d x d covariance. It is built in
    one pass over column chunks: each chunk holds every sample's slice of pixels, so its column means
    (and hence exact centring) are available inside the chunk, and nothing larger than one
    (n, chunk_features) float32 block is ever materialised. Pixels are scaled by 1/255 to [0, 1]. The
    total variance is accumulated in float64 in the same pass, so the explained-variance ratio is
    relative to all the data's variance, not to the components kept.

    Parameters
    ----------
    images : np.ndarray, shape (n, ...), uint8
        E.g. the cache's ``img400.npy`` memmap, (n, 400, 400, 3).
    n_components : int
    chunk_features : int
        Features per chunk; memory is about ``n * chunk_features * 4`` bytes plus the n x n Gram.

    Returns
    -------
    scores : np.ndarray, shape (n, n_components), float64
        Projections on the principal components (sign as ``eigh`` returns it).
    explained_variance : np.ndarray, shape (n_components,), float64
        Variance along each component (ddof=1), in (pixel/255)^2.
    total_variance : float
        Sum of all features' variances (ddof=1).
    """
    n = images.shape[0]
    if n < 2:
        raise EvaluateError(f"PCA needs at least 2 images, got {n}")
    flat = images.reshape(n, -1)
    gram = np.zeros((n, n), dtype=np.float64)
    total = 0.0
    for start in range(0, flat.shape[1], chunk_features):
        block = np.asarray(flat[:, start:start + chunk_features], dtype=np.float32)
        block *= np.float32(1 / 255)
        block -= block.mean(axis=0, dtype=np.float64).astype(np.float32)
        gram += block @ block.T
        total += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    scores = eigenvectors[:, order] * np.sqrt(eigenvalues)
    return scores, eigenvalues / (n - 1), total / (n - 1)


def _read_pca_cache(cache_dir):
    """img400 memmap, labels and class names of a feature cache, checked against each other."""
    manifest = _read_json(cache_dir / "manifest.json")
    try:
        images = np.load(cache_dir / "img400.npy", mmap_mode="r")
        labels = np.load(cache_dir / "labels.npy")
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{cache_dir}: cannot read img400.npy/labels.npy ({e.__class__.__name__}: {e}) "
                            f"— to rebuild: python -m features --force") from None
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise EvaluateError(f"{cache_dir}/img400.npy: {images.dtype}{images.shape} with {labels.shape} labels, "
                            f"expected uint8 (n, 400, 400, 3) and (n,)")
    classes = [str(c) for c in manifest.get("classes") or []]
    if len(classes) < 2:
        raise EvaluateError(f"{cache_dir}/manifest.json: 'classes' must list two or more names")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise EvaluateError(f"{cache_dir}/labels.npy: labels outside 0..{len(classes) - 1}")
    return images, labels, classes, str(manifest.get("data_name") or cache_dir.name)


def pca_figure(cache_dir, path):
    """PC1 vs PC2 of the cache's 400x400x3 images coloured by class; PVE of PC1+PC2 in the title.

    Returns
    -------
    dict
        ``data_name``, ``n``, ``cache_dir``, ``explained_variance_ratio`` (PC1, PC2), ``pve_percent``,
        ``figure``.
    """
    cache_dir = Path(cache_dir)
    images, labels, classes, data_name = _read_pca_cache(cache_dir)
    scores, variance, total = pca_scores(images)
    ratio = variance / total if total > 0 else np.zeros_like(variance)
    pve = 100.0 * float(ratio.sum())
    fig = Figure(figsize=(10, 7), layout="constrained")
    ax = fig.add_subplot()
    for c, (name, color) in enumerate(zip(classes, class_colors(len(classes)))):
        mask = labels == c
        if mask.any():
            ax.scatter(scores[mask, 0], scores[mask, 1], s=14, color=color, alpha=0.75, label=name)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.2f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.2f} % of variance)")
    # Outside the axes: with many classes a legend inside would hide the points.
    ax.legend(title="class", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
              ncol=1 if len(classes) <= 16 else 2)
    ax.grid(alpha=0.3)
    ax.set_title(f"PCA of the {'x'.join(map(str, images.shape[1:]))} images, pixels/255 — data {data_name}, "
                 f"n={len(labels)}\nPVE PC1+PC2 = {pve:.2f} % ({PCA_REPORTED})", fontsize=10)
    save_figure(fig, path)
    return {"data_name": data_name, "n": int(len(labels)), "cache_dir": str(cache_dir),
            "explained_variance_ratio": ratio.tolist(), "pve_percent": pve, "figure": str(path)}


def pca_cache_dir(runs, runs_root, data):
    """The feature cache a ``data`` run read, from its ``config.json`` (``data.cache_dir``).

    A relative path is tried as recorded (from where run_all.py ran), then beside ``runs_root``.
    Runs that recorded none fall back to ``cache/<data>``.
    """
    recorded = [r for r in runs if r.data == data and (r.config.get("data") or {}).get("cache_dir")]
    if not recorded:
        return Path("cache") / data
    newest = Path(_newest(recorded).config["data"]["cache_dir"])
    for candidate in (newest, Path(runs_root).parent / newest):
        if (candidate / "manifest.json").exists():
            return candidate
    raise EvaluateError(f"--pca: the cache folder {newest} recorded by the {data} runs is gone; "
                        f"pass --cache DIR (or rebuild it: python -m features)")


# ---------------------------------------------------------------------------------------------- summary

def summary_markdown(results, pca, deployable):
    """``summary.md``: the table, every group's text and figures and the PCA, on one page.

    Figures are linked by name: ``summary.md`` is written in the same folder as they are.
    """
    data = ", ".join(sorted({r["data"] for r in results})) or (pca["data_name"] if pca else "-")
    presets = ", ".join(sorted({r["preset"] for r in results})) or "-"
    lines = [f"# Evaluation summary — data {data}, preset {presets}", "",
             "Written by `python evaluate.py --all` from the saved runs; figures are the PNGs beside this file.",
             ""]
    if results:
        lines += ["## All models", ""] + table_lines(results) + [""] + [f"- {n}" for n in table_notes(results)]
    for r in results:
        lines += ["", f"## {r['model']}, split {r['split']} — preset {r['preset']}, data {r['data']}, "
                      f"{runs_label(r)}", "", "```text", format_group(r), "```", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in r["figures"]]
    if pca:
        lines += ["", f"## PCA — data {pca['data_name']}", "", pca_line(pca), "",
                  f"![pca]({Path(pca['figure']).name})"]
    if deployable:
        lines += ["", "## Deployable runs", "", deployable_line(deployable)]
    return "\n".join(lines) + "\n"


def pca_line(pca):
    """The PCA result in one line."""
    return (f"PCA ({pca['data_name']}, n={pca['n']}, pixels/255): PVE PC1+PC2 = {pca['pve_percent']:.2f} % "
            f"({PCA_REPORTED})")


# ---------------------------------------------------------------------------------------------- CLI

def _split_arg(name):
    """``--split``: a split with a test part, ``k<K>`` (every fold) or ``k<K>f<i>`` (one fold)."""
    if name == DEPLOY_SPLIT:
        raise argparse.ArgumentTypeError(f"split {DEPLOY_SPLIT!r} has no test part: nothing to evaluate")
    fold_group = re.fullmatch(r"k(\d+)", name)
    if is_split(name) or (fold_group and int(fold_group[1]) >= 2):
        return name
    raise argparse.ArgumentTypeError(f"{name!r}: expected one of {', '.join(SPLITS[:-1])}, k<K> (every fold) "
                                     f"or k<K>f<i> (one fold)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="full report-style text for this model (any folder under runs/<data>/)")
    p.add_argument("--split", type=_split_arg, help="r70, r80, filtered, k<K> (all folds) or k<K>f<i>")
    p.add_argument("--preset", help="default: that of the newest run per model and split")
    p.add_argument("--data", help="data name (gtzan, synthetic, ...); default: that of the newest run")
    p.add_argument("--all", action="store_true", help="one table, every trained model x split, + summary.md")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of text")
    p.add_argument("--pca", action="store_true", help="also (or, alone, only) the PCA figure of img400")
    p.add_argument("--runs", default="runs", help="run folders root (default runs/)")
    p.add_argument("--cache", help="feature cache dir for --pca (default: the one the runs recorded)")
    p.add_argument("--out", default="reports", help="figure and summary folder (default reports/)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except EvaluateError as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 1


def evaluate_groups(groups, out):
    """Evaluate each group and draw its figures; groups with nothing readable are left out."""
    results = []
    for group in groups:
        result = evaluate_group(group)
        if result is None:
            continue
        stem = f"{group.model}_{group.split}"
        result["figures"] = [str(plot_confusion(result, out / f"confusion_{stem}.png"))]
        curves = plot_curves(group, result, out / f"curves_{stem}.png")
        if curves is not None:
            result["figures"].append(str(curves))
        results.append(result)
    return results


def _nothing_message(args, groups):
    """The one line said when nothing could be evaluated, with the command that trains it."""
    where = " ".join(x for x in (args.model, args.split, args.preset, args.data) if x)
    what = "nothing left to evaluate (every run skipped, see above)" if groups else \
        f"no complete run{' of ' + where if where else ''} to evaluate"
    return f"{what} under {args.runs}/ — run: {run_command(args.model, args.split)}"


def _main(args):
    out = Path(args.out)
    pca_only = args.pca and not (args.model or args.all)
    runs = find_runs(args.runs, args.model, args.data)
    groups = select_groups(runs, args.model, args.split, args.preset, args.data)
    data = args.data or (groups[0].data if groups else (_newest(runs).data if runs else None))
    deployable = [r for r in filter_runs(runs, args.model, None, args.preset, data) if r.split == DEPLOY_SPLIT]
    results = [] if pca_only else evaluate_groups(groups, out)
    if not pca_only and not results:
        print(_nothing_message(args, groups) + (f"\n{deployable_line(deployable)}" if deployable else ""))
        return 1
    pca = None
    if args.pca:
        if args.cache is None and data is None:
            raise EvaluateError("--pca: no runs to tell which data; pass --cache cache/<data_name>")
        cache = Path(args.cache) if args.cache else pca_cache_dir(runs, args.runs, data)
        pca = pca_figure(cache, out / "pca.png")
    figures = [f for r in results for f in r["figures"]] + ([pca["figure"]] if pca else [])
    summary = None
    if args.all:
        summary = out / "summary.md"
        text = summary_markdown(results, pca, deployable)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(summary, lambda f: f.write(text.encode("utf-8")))
    if args.json:
        print(json.dumps({"runs_root": str(args.runs), "groups": results, "pca": pca,
                          "unverified_runs": sum(r["unverified_runs"] for r in results),
                          "deployable": [str(r.path) for r in deployable],
                          "summary": None if summary is None else str(summary)}, indent=1))
        return 0
    _print_text(args, results, pca, deployable, figures, summary)
    return 0


def _print_text(args, results, pca, deployable, figures, summary):
    """Text output: the table (default, ``--all``) or each group's full text (``--model``)."""
    if results and (args.model is None or args.all):
        print(format_table(results))
    if args.model and not args.all:
        print("\n\n".join(format_group(r) for r in results))
    if pca:
        print(pca_line(pca))
    if deployable:
        print(deployable_line(deployable))
    print("figures: " + " ".join(figures))
    unverified = sum(r["unverified_runs"] for r in results)
    if unverified:
        print(f"note: {unverified} run(s) made before checksums were recorded: read unverified "
              f"(structure checks only); run_all.py retrains them")
    if summary is not None:
        print(f"summary: {summary}")


if __name__ == "__main__":
    sys.exit(main())
