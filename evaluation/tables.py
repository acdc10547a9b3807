"""The text and markdown: one group's report-style text, the table of every group, ``summary.md``."""
from pathlib import Path

import numpy as np

from models import REPORTED
from models.runs import DEPLOY_SPLIT, run_command

from .groups import SVM400, model_order
from .metrics import TOPK

SVM400_NOTE = "report's SVM on the 400x400x3 image"
PCA_REPORTED = "report: 51.56 % on GTZAN"


def protocol_note(data, preset):
    """One line saying whether these numbers follow the report's protocol."""
    if data == "gtzan" and preset == "report":
        return "protocol: GTZAN with the report's settings (preset report)"
    return (f"NOTE: preset {preset!r} on data {data!r}: not the report's protocol "
            f"(GTZAN, preset report); the report's figures are shown for reference only")


def fmt(stat, digits=2):
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
                    lines.append(f"top-{k}: ours {fmt(ours, 1)} % ({label}) vs {name}: no figure")
                continue
            lines.append(f"top-{k}: ours {fmt(ours, 1)} % ({label}) vs {name} {figure} % "
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
        line = f"top-{k}: {fmt(stat)}"
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
        ours = [fmt(r["topk_percent"][f"top{k}"], 1) for k in TOPK]
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
