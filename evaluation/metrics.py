"""The numbers of one group: top-k, the classification report, per-class precision and recall, the
confusion matrix, and their mean +- std over seeds or folds."""
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from models import REPORTED, rank_classes, top_k_accuracy
from models.runs import RunFileError, load_predictions, repair_command

from . import warn
from .groups import SVM400, config_hash

TOPK = (1, 2, 3)


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


def _load_members(group):
    """(run, Predictions) for every readable run of the group with the first run's classes."""
    members = []
    for run in group.runs:
        try:
            predictions = load_predictions(run)
        except RunFileError as e:
            warn(f"{e}; skipped — to repair: {repair_command(run.path, run.config)}")
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
        "score_kind": members[0][1].kind, "config_hash": config_hash(runs[0]),
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
