"""The report's tables and figures from saved runs, in seconds, never retraining.

Reads the run folders ``run_all.py`` writes, ``runs/<data>/<model>/<split>-<preset>-seed<k>/``
(``config.json``, ``history.csv``, optional ``history_final.csv``, ``predictions.npz``), counting only
those that hold ``COMPLETE``, and prints for each model and split:

- scikit-learn's ``classification_report`` with the genre names (2 decimals, as the report printed it);
- per-class precision and recall (the report's "Accuracy for blues is: ..." is per-class *precision*);
- the confusion matrix (rows true, columns predicted);
- top-1/2/3 accuracy from the saved probabilities or SVM scores, with the semantics of
  ``sklearn.metrics.top_k_accuracy_score`` (ties go to the higher class index);
- ours beside the report's figure; mean +- std (ddof=1) and per-seed values when several seeds ran.

Runs of different data or presets are never pooled: by default the data of the newest complete run is
used, and for each model and split the preset of its newest run (``--data``/``--preset`` choose).
Within a group, the seeds' test predictions are concatenated for the classification report and the
confusion matrix (labelled as such); top-k and per-class figures are also given per seed.

Figures (PNG, ``reports/`` or ``--out``): ``confusion_<model>_<split>.png``,
``curves_<model>_<split>.png`` (loss and accuracy vs epoch, early stop marked) and, with ``--pca``,
``pca.png`` (first two principal components of the 400x400x3 images, coloured by genre).

Usage::

    python evaluate.py                      # every model x split: one table + figures
    python evaluate.py --model cnn2d        # the full text for one model
    python evaluate.py --all --json         # the same numbers, machine-readable
    python evaluate.py --pca                # PCA figure from cache/<data>/img400.npy
"""
import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from features import atomic_write
from models import MODELS, REPORTED, rank_classes, top_k_accuracy

# run_all.py's svm400 is the report's SVM on the 400x400x3 image (models/train.py VARIANTS).
RUN_NAMES = MODELS + ("svm400",)
SPLITS = ("r70", "r80", "filtered")
PRESETS = ("report", "quick", "tiny")
TOPK = (1, 2, 3)
N_CLASSES = 10
RUN_DIR_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<preset>[A-Za-z0-9_]+)-seed(?P<seed>\d+)$")
# The report's SVM on the flattened 400x400x3 image; ours trains on 360x120x3 (the report's main SVM).
SVM400_NOTE = "report's SVM on the 400x400x3 image"


class EvaluateError(Exception):
    """Bad or missing input; ``str()`` is the one line shown to the user."""


class Run(NamedTuple):
    """One complete run folder."""

    path: Path
    data: str
    model: str
    split: str
    preset: str
    seed: int
    config: dict
    finished: str


class Group(NamedTuple):
    """The runs (one per seed) that are pooled: same data, model, split, preset and config_hash."""

    data: str
    model: str
    split: str
    preset: str
    runs: list
    set_aside: int
    other_presets: list


# ---------------------------------------------------------------------------------------------- metrics

def mean_std(values):
    """Mean and sample std (ddof=1) over seeds (axis 0); std is None for a single seed.

    Parameters
    ----------
    values : array_like, shape (n_seeds,) or (n_seeds, n_classes)

    Returns
    -------
    mean, std : float or list of float (std None when n_seeds == 1)
    """
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1).tolist() if len(values) > 1 else None
    return values.mean(axis=0).tolist(), std


# ---------------------------------------------------------------------------------------------- reading

def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{path}: cannot read JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(value, dict):
        raise EvaluateError(f"{path}: expected a JSON object")
    return value


def find_runs(runs_root):
    """Every complete run under ``runs_root`` (folders without ``COMPLETE`` are ignored).

    Parameters
    ----------
    runs_root : str or Path
        Holds ``<data>/<model>/<split>-<preset>-seed<k>/``.

    Returns
    -------
    list of Run
        Sorted by data, model, split, preset, seed.
    """
    runs = []
    for complete in sorted(Path(runs_root).glob("*/*/*/COMPLETE")):
        path = complete.parent
        match = RUN_DIR_RE.match(path.name)
        if match is None:
            raise EvaluateError(f"{path}: run folder name is not <split>-<preset>-seed<k>")
        config = _read_json(path / "config.json")
        runs.append(Run(path, path.parent.parent.name, path.parent.name, match["split"],
                        match["preset"], int(match["seed"]), config, str(config.get("finished", ""))))
    return runs


def _newest(runs):
    # ISO timestamps sort as strings; COMPLETE's mtime breaks ties and covers a missing "finished".
    return max(runs, key=lambda r: (r.finished, (r.path / "COMPLETE").stat().st_mtime))


def select_groups(runs, model=None, split=None, preset=None, data=None):
    """Choose what to evaluate: one group of seeds per model and split, never mixing data or presets.

    Parameters
    ----------
    runs : list of Run
    model, split, preset, data : str or None
        Filters; ``data`` defaults to that of the newest matching run, ``preset`` (per model and
        split) to that of the newest run of that model and split.

    Returns
    -------
    list of Group
        In ``MODELS`` then ``SPLITS`` order. Within a group only runs with the newest run's
        ``config_hash`` are kept (``set_aside`` counts the others: built on other features).
    """
    runs = [r for r in runs if (model is None or r.model == model) and (split is None or r.split == split)
            and (preset is None or r.preset == preset) and (data is None or r.data == data)]
    if not runs:
        return []
    data = data or _newest(runs).data
    runs = [r for r in runs if r.data == data]
    groups = []
    for key in sorted({(r.model, r.split) for r in runs}, key=_model_split_order):
        same = [r for r in runs if (r.model, r.split) == key]
        chosen = preset or _newest(same).preset
        members = [r for r in same if r.preset == chosen]
        config_hash = _config_hash(_newest(members))
        kept = sorted((r for r in members if _config_hash(r) == config_hash), key=lambda r: r.seed)
        others = sorted({r.preset for r in same} - {chosen})
        groups.append(Group(data, key[0], key[1], chosen, kept, len(members) - len(kept), others))
    return groups


def _config_hash(run):
    # The feature cache the run was trained on, as models/train.py records it.
    return (run.config.get("data") or {}).get("config_hash")


def _model_split_order(key):
    model, split = key
    return (RUN_NAMES.index(model) if model in RUN_NAMES else len(RUN_NAMES), model,
            SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def load_predictions(run_path):
    """The test predictions of one run.

    Returns
    -------
    scores : np.ndarray, shape (n, 10), float32
        ``probs`` (torch models) or ``scores`` (SVM one-vs-rest decision scores).
    labels : np.ndarray, shape (n,), int64
    classes : list of str, length 10
    kind : str
        ``"probs"`` or ``"scores"``.
    """
    path = Path(run_path) / "predictions.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            kind = "probs" if "probs" in z.files else "scores"
            if kind not in z.files or "labels" not in z.files or "classes" not in z.files:
                raise EvaluateError(f"{path}: needs 'probs' or 'scores', 'labels' and 'classes'")
            scores, labels, classes = z[kind], z["labels"], [str(c) for c in z["classes"]]
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if scores.ndim != 2 or scores.shape[1] != N_CLASSES or len(classes) != N_CLASSES:
        raise EvaluateError(f"{path}: {kind} has shape {scores.shape} with {len(classes)} classes, "
                            f"expected (n, {N_CLASSES})")
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise EvaluateError(f"{path}: labels {labels.dtype}{labels.shape} do not match {kind} {scores.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise EvaluateError(f"{path}: labels outside 0..{N_CLASSES - 1}")
    if not np.isfinite(scores).all():
        raise EvaluateError(f"{path}: {kind} has non-finite values")
    return scores.astype(np.float32), labels.astype(np.int64), classes, kind


def load_history(path):
    """A ``history.csv`` as float arrays (empty cells -> NaN).

    Returns
    -------
    dict of str -> np.ndarray, shape (n_epochs,)
        Keys ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``seconds``.
    """
    columns = ("epoch", "train_loss", "train_acc", "val_acc", "seconds")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise EvaluateError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if rows and not set(columns) <= set(rows[0]):
        raise EvaluateError(f"{path}: needs columns {','.join(columns)}")
    try:
        return {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows]) for c in columns}
    except ValueError as e:
        raise EvaluateError(f"{path}: not a number ({e})") from None


# ---------------------------------------------------------------------------------------------- numbers

def evaluate_group(group):
    """Every number the report shows for one group of seeds.

    Returns
    -------
    dict
        JSON-ready. ``topk_percent[f"top{k}"]`` = {mean, std, per_seed} in percent; ``per_class``
        precision/recall (fractions) on the seeds' predictions together and per seed;
        ``classification_report`` (sklearn's ``output_dict``) and ``confusion`` (rows true, columns
        predicted) on the seeds' predictions together; ``report`` the report's figures (percent).
    """
    loaded = [load_predictions(r.path) for r in group.runs]
    classes = loaded[0][2]
    for run, (_, _, other, _) in zip(group.runs, loaded):
        if other != classes:
            raise EvaluateError(f"{run.path}/predictions.npz: classes {other} differ from {classes}")
    # The predicted class is rank 0 of the same ordering as top-k, so accuracy == top-1 even on ties.
    preds = [rank_classes(scores)[:, 0] for scores, _, _, _ in loaded]
    labels_all = np.concatenate([labels for _, labels, _, _ in loaded])
    preds_all = np.concatenate(preds)
    ids = list(range(N_CLASSES))
    topk = {}
    for k in TOPK:
        per_seed = [100.0 * top_k_accuracy(labels, scores, k) for scores, labels, _, _ in loaded]
        mean, std = mean_std(per_seed)
        topk[f"top{k}"] = {"mean": mean, "std": std, "per_seed": per_seed}
    per_seed_pr = [precision_recall_fscore_support(labels, pred, labels=ids, average=None, zero_division=0)[:2]
                   for (_, labels, _, _), pred in zip(loaded, preds)]
    precision, recall = precision_recall_fscore_support(labels_all, preds_all, labels=ids, average=None,
                                                        zero_division=0)[:2]
    per_class = {"precision": precision.tolist(), "recall": recall.tolist()}
    for i, name in enumerate(("precision", "recall")):
        values = [pr[i].tolist() for pr in per_seed_pr]
        mean, std = mean_std(values)
        per_class.update({f"{name}_per_seed": values, f"{name}_mean": mean, f"{name}_std": std})
    reported = REPORTED.get((group.model, group.split))
    extra = REPORTED.get(("svm400", group.split)) if group.model == "svm" else None
    return {
        "data": group.data, "model": group.model, "split": group.split, "preset": group.preset,
        "seeds": [r.seed for r in group.runs], "runs": [str(r.path) for r in group.runs],
        "n_test": [len(labels) for _, labels, _, _ in loaded],
        "score_kind": loaded[0][3],
        "config_hash": _config_hash(group.runs[0]),
        "set_aside_runs": group.set_aside, "other_presets": group.other_presets,
        "epochs_run": [r.config.get("epochs_run") for r in group.runs],
        "stopped_early": [r.config.get("stopped_early") for r in group.runs],
        "final_epochs": [r.config.get("final_epochs") for r in group.runs],
        "wall_seconds": [r.config.get("wall_seconds") for r in group.runs],
        "classes": classes,
        "topk_percent": topk,
        "report": None if reported is None else dict(zip(("top1", "top2", "top3"), reported)),
        "report_svm400": None if extra is None else dict(zip(("top1", "top2", "top3"), extra)),
        "per_class": per_class,
        "classification_report": classification_report(labels_all, preds_all, labels=ids,
                                                        target_names=classes, zero_division=0,
                                                        output_dict=True),
        "classification_report_text": classification_report(labels_all, preds_all, labels=ids,
                                                             target_names=classes, zero_division=0, digits=2),
        "confusion": confusion_matrix(labels_all, preds_all, labels=ids).tolist(),
    }


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
    n = len(result["seeds"])
    seeds = f"{n} seeds" if n > 1 else f"seed {result['seeds'][0]}"
    lines = []
    for name, report in (("report", result["report"]), (SVM400_NOTE, result["report_svm400"])):
        for k in TOPK:
            ours = result["topk_percent"][f"top{k}"]
            figure = None if report is None else report[f"top{k}"]
            if figure is None:
                if name == "report":
                    lines.append(f"top-{k}: ours {_fmt(ours, 1)} % ({seeds}) vs {name}: no figure")
                continue
            lines.append(f"top-{k}: ours {_fmt(ours, 1)} % ({seeds}) vs {name} {figure} % "
                         f"({ours['mean'] - figure:+.1f} points)")
    return lines


def format_group(result):
    """The full report-style text for one group (see the module docstring)."""
    classes, n = result["classes"], len(result["seeds"])
    together = f"the {n} seeds' test predictions together, " if n > 1 else ""
    out = [f"== {result['model']}  split {result['split']}  preset {result['preset']}  "
           f"data {result['data']}  seeds {' '.join(map(str, result['seeds']))}  "
           f"n_test {'/'.join(map(str, result['n_test']))} ==",
           protocol_note(result["data"], result["preset"])]
    if result["set_aside_runs"]:
        out.append(f"({result['set_aside_runs']} older run(s) built on other features set aside)")
    if result["other_presets"]:
        out.append(f"(also run with preset {', '.join(result['other_presets'])}: use --preset)")
    out += ["", f"Classification report ({together}n={sum(result['n_test'])}):",
            result["classification_report_text"],
            "Per class. The report's \"Accuracy for <genre> is: ...\" is this precision; recall is "
            "the fraction of the genre's clips found:"]
    pc = result["per_class"]
    for i, name in enumerate(classes):
        line = f"Precision for {name} is: {pc['precision'][i]:.2f}"
        if n > 1:
            line += f" ({pc['precision_mean'][i]:.2f} ± {pc['precision_std'][i]:.2f} over seeds)"
        line += f"   recall for {name} is: {pc['recall'][i]:.2f}"
        if n > 1:
            line += f" ({pc['recall_mean'][i]:.2f} ± {pc['recall_std'][i]:.2f} over seeds)"
        out.append(line)
    out += ["", f"Confusion matrix (rows true, columns predicted; {together}counts):",
            confusion_table(result["confusion"], classes), "",
            "Top-k accuracy (%)" + (f", mean ± std (ddof=1) over {n} seeds:" if n > 1 else ":")]
    for k in TOPK:
        stat = result["topk_percent"][f"top{k}"]
        line = f"top-{k}: {_fmt(stat)}"
        if n > 1:
            line += "   per seed: " + ", ".join(f"seed{s} {v:.2f}" for s, v in zip(result["seeds"],
                                                                               stat["per_seed"]))
        out.append(line)
    out += ["", f"Ours (preset {result['preset']}, data {result['data']}) vs the report "
                f"(split {result['split']}):"]
    out += comparison_lines(result)
    return "\n".join(out)


def format_table(results):
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
        rows.append([r["model"], r["split"], r["preset"], r["data"], str(len(r["seeds"]))]
                    + [c for pair in zip(ours, report_cells(reported)) for c in pair])
    done = {(r["model"], r["split"]) for r in results}
    missing = [key for key in REPORTED if key not in done]
    for model, split in missing:
        rows.append([model, split, "not run", "", ""]
                    + [c for pair in zip(["", "", ""], report_cells(REPORTED[(model, split)])) for c in pair])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    notes = ["", "top-k accuracy in %; ours is mean ± std (ddof=1) when several seeds ran."]
    notes += sorted({protocol_note(r["data"], r["preset"]) for r in results})
    if ("svm400", "r80") in REPORTED:
        notes.append(f"svm400 is the {SVM400_NOTE}; run_all.py's svm uses the 360x120x3 image (report: 64 %).")
    runnable = sorted({m for m, _ in missing if m in RUN_NAMES}, key=RUN_NAMES.index)
    if runnable:
        notes.append("to fill the 'not run' rows: " + run_command(",".join(runnable))
                     + " (with --split as each row says)")
    return "\n".join(lines + notes)


def run_command(model=None, split=None):
    """The ``run_all.py`` command that produces the missing runs."""
    command = "python run_all.py"
    if model:
        command += f" --models {model}"
    if split:
        command += f" --split {split}"
    return command


# ---------------------------------------------------------------------------------------------- figures

def save_figure(fig, path):
    """Write ``fig`` as a PNG atomically (``features.atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def _label(result):
    seeds = result["seeds"]
    return (f"{result['model']}, split {result['split']} — preset {result['preset']}, data {result['data']}, "
            + (f"seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"))


def plot_confusion(result, path):
    """Confusion-matrix heatmap labelled with genres and counts (rows true, columns predicted)."""
    cm = np.asarray(result["confusion"])
    classes = result["classes"]
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="clips")
    threshold = cm.max() / 2 if cm.max() else 1
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=9,
                color="white" if value > threshold else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted genre")
    ax.set_ylabel("true genre")
    top1 = result["topk_percent"]["top1"]
    together = " (seeds together)" if len(result["seeds"]) > 1 else ""
    ax.set_title(f"{_label(result)}\ntest confusion matrix{together}, top-1 {_fmt(top1, 1)} %", fontsize=10)
    return save_figure(fig, path)


def _percent(acc):
    # Histories may store accuracy as a fraction or in percent; plot percent either way.
    finite = acc[np.isfinite(acc)]
    return acc * 100.0 if finite.size and finite.max() <= 1.0 else acc


def plot_curves(group, result, path):
    """Training loss, and training & validation accuracy, vs epoch (the report's Figures 2-9).

    One line per seed; a retrain on train+val (``history_final.csv``) is dotted; the epoch at which
    the stopping rule fired is marked. Returns None when no run has a history (the SVM).
    """
    histories = [(r, load_history(r.path / "history.csv")) for r in group.runs
                 if (r.path / "history.csv").exists()]
    if not histories:
        return None
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(histories))]
    for (run, h), color in zip(histories, colors):
        tag = f"seed {run.seed}"
        ax_loss.plot(h["epoch"], h["train_loss"], color=color, label=f"train ({tag})")
        ax_acc.plot(h["epoch"], _percent(h["train_acc"]), color=color, label=f"train ({tag})")
        if np.isfinite(h["val_acc"]).any():
            ax_acc.plot(h["epoch"], _percent(h["val_acc"]), color=color, ls="--", label=f"validation ({tag})")
        final = run.path / "history_final.csv"
        if final.exists():
            f = load_history(final)
            ax_loss.plot(f["epoch"], f["train_loss"], color=color, ls=":", label=f"retrain train+val ({tag})")
            ax_acc.plot(f["epoch"], _percent(f["train_acc"]), color=color, ls=":",
                        label=f"retrain train+val ({tag})")
        if run.config.get("stopped_early") and run.config.get("epochs_run"):
            stop = run.config["epochs_run"]
            for ax in (ax_loss, ax_acc):
                ax.axvline(stop, color=color, ls="-.", lw=1, alpha=0.7,
                           label=f"early stop, epoch {stop} ({tag})")
    ax_loss.set_ylabel("training loss")
    ax_acc.set_ylabel("accuracy (%)")
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.03)   # keeps an early-stop line on the last epoch off the frame
        ax.set_title(f"{what} vs epoch", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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


def pca_figure(cache_dir, path):
    """PC1 vs PC2 of the cache's 400x400x3 images coloured by genre; PVE of PC1+PC2 in the title.

    Returns
    -------
    dict
        ``data_name``, ``n``, ``explained_variance_ratio`` (PC1, PC2), ``pve_percent``, ``figure``.
    """
    cache_dir = Path(cache_dir)
    manifest = _read_json(cache_dir / "manifest.json")
    try:
        images = np.load(cache_dir / "img400.npy", mmap_mode="r")
        labels = np.load(cache_dir / "labels.npy")
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{cache_dir}: cannot read img400.npy/labels.npy ({e.__class__.__name__}: {e})") from None
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise EvaluateError(f"{cache_dir}/img400.npy: {images.dtype}{images.shape} with {labels.shape} labels, "
                            f"expected uint8 (n, 400, 400, 3) and (n,)")
    classes = list(manifest.get("classes") or [])
    if len(classes) != N_CLASSES:
        raise EvaluateError(f"{cache_dir}/manifest.json: 'classes' must list {N_CLASSES} names")
    data_name = str(manifest.get("data_name") or cache_dir.name)
    scores, variance, total = pca_scores(images)
    ratio = variance / total if total > 0 else np.zeros_like(variance)
    pve = 100.0 * float(ratio.sum())
    fig = Figure(figsize=(8.5, 7), layout="constrained")
    ax = fig.add_subplot()
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            ax.scatter(scores[mask, 0], scores[mask, 1], s=14, color=f"C{c}", alpha=0.75, label=name)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.2f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.2f} % of variance)")
    ax.legend(title="genre", fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    ax.set_title(f"PCA of the {'x'.join(map(str, images.shape[1:]))} images, pixels/255 — data {data_name}, "
                 f"n={len(labels)}\nPVE PC1+PC2 = {pve:.2f} % (report: 51.56 % on GTZAN)", fontsize=10)
    save_figure(fig, path)
    return {"data_name": data_name, "n": int(len(labels)), "explained_variance_ratio": ratio.tolist(),
            "pve_percent": pve, "figure": str(path)}


# ---------------------------------------------------------------------------------------------- CLI

def parse_args(argv):
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=RUN_NAMES, help="full report-style text for this model")
    p.add_argument("--split", choices=SPLITS)
    p.add_argument("--preset", choices=PRESETS, help="default: that of the newest run per model and split")
    p.add_argument("--data", help="data name (gtzan, synthetic, ...); default: that of the newest run")
    p.add_argument("--all", action="store_true", help="one table, every trained model x split")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of text")
    p.add_argument("--pca", action="store_true", help="also (or, alone, only) the PCA figure of img400")
    p.add_argument("--runs", default="runs", help="run folders root (default runs/)")
    p.add_argument("--cache", help="feature cache dir for --pca (default cache/<data>/)")
    p.add_argument("--out", default="reports", help="figure folder (default reports/)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except EvaluateError as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 1


def _main(args):
    out = Path(args.out)
    pca_only = args.pca and not (args.model or args.all)
    runs = find_runs(args.runs)
    groups = select_groups(runs, args.model, args.split, args.preset, args.data)
    results, figures = [], []
    if not pca_only:
        if not groups:
            where = " ".join(x for x in (args.model, args.split, args.preset, args.data) if x)
            print(f"no complete run{' of ' + where if where else ''} under {args.runs}/ — run: "
                  f"{run_command(args.model, args.split)}")
            return 1
        for group in groups:
            result = evaluate_group(group)
            stem = f"{group.model}_{group.split}"
            result["figures"] = [str(plot_confusion(result, out / f"confusion_{stem}.png"))]
            curves = plot_curves(group, result, out / f"curves_{stem}.png")
            if curves is not None:
                result["figures"].append(str(curves))
            results.append(result)
            figures += result["figures"]
    pca = None
    if args.pca:
        data = args.data or (groups[0].data if groups else None)
        if args.cache is None and data is None:
            raise EvaluateError("--pca: no runs to tell which data; pass --cache cache/<data_name>")
        pca = pca_figure(Path(args.cache) if args.cache else Path("cache") / data, out / "pca.png")
        figures.append(pca["figure"])
    if args.json:
        print(json.dumps({"runs_root": str(args.runs), "groups": results, "pca": pca}, indent=1))
        return 0
    if results and (args.model is None or args.all):
        print(format_table(results))
    if args.model and not args.all:
        print("\n\n".join(format_group(r) for r in results))
    if pca:
        print(f"PCA ({pca['data_name']}, n={pca['n']}, pixels/255): PVE PC1+PC2 = {pca['pve_percent']:.2f} % "
              f"(report: 51.56 % on GTZAN)")
    print("figures: " + " ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
