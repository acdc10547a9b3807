"""The PNG figures: a group's confusion matrix and its training curves, written atomically."""
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from features.files import atomic_write
from models.runs import MONITOR_COLUMN, RunFileError, load_histories, repair_command

from . import warn
from .tables import fmt, pooled_label, runs_label

MONITOR_LABEL = "test accuracy (monitoring only, not used for any decision)"


def save_figure(fig, path):
    """Write ``fig`` as a PNG atomically (``features.files.atomic_write``)."""
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
    top1 = fmt(result["topk_percent"]["top1"], 1)
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
        try:
            history, final = load_histories(run)
        except RunFileError as e:
            warn(f"{e}; curves drawn without this run — to repair: {repair_command(run.path, run.config)}")
            continue
        if history is not None:  # the SVM has no epochs
            out.append((run, history, final))
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
