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
evaluated. A folder that is not a complete run, that fails ``models.runs.verify_run`` (the sha256
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
import json
import re
import sys
from pathlib import Path

from evaluation import EvaluateError, find_runs
from evaluation.figures import plot_confusion, plot_curves
from evaluation.groups import filter_runs, select_groups
from evaluation.metrics import evaluate_group
from evaluation.pca import pca_cache_dir, pca_figure
from evaluation.tables import deployable_line, format_group, format_table, pca_line, summary_markdown
from features.files import atomic_write
from models.hparams import SPLITS, is_split
from models.runs import DEPLOY_SPLIT, newest, run_command


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
    data = args.data or (groups[0].data if groups else (newest(runs).data if runs else None))
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
