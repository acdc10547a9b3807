"""Train and test the report's five models and ``best``: ``python run_all.py [options]``.

Brings the feature cache up to date for the arrays the chosen models read
(``features.cache.ensure_features``, with the pretrained musicnn network for ``best``'s features; with
no data named and none found it falls back to the synthetic genre set, loudly), then trains each model
with ``models.train.run`` on its split (``--split``, or ``--folds K``; ``best`` and ``patchcnn`` without
either: ``r80``, then ``all`` for ``predict.py``) and prints one line per epoch and a final table beside
the report's figures. Each run is a folder
``<runs>/<data>/<model>/<split>-<preset>-seed<k>/``; a complete run is skipped, an interrupted one resumes.

Presets
-------
report  the report's protocol exactly (epoch limits, stopping rules, batch sizes, splits, cnn1d_raw's
        retrain on train+val). Up to ~10 hours on 2 CPU cores; the default when a GPU is present.
quick   the default on a CPU: the same five models on the same full-size inputs and all the clips, the
        same stopping rules and protocol, fewer epochs. Its numbers are labelled "quick": they are
        not the report's protocol (expect lower accuracies). Estimate for the 1000 GTZAN clips on
        2 cores, from one epoch of each model through this loop on a 1000-clip cache (every epoch
        limit reached; validation, test and checkpoints included):

            cnn1d_raw  2 epochs on 700 + 2-epoch retrain on 800   ~9.3 min  (131 s per 700-clip epoch)
            cnn1d_mel  <= 15 epochs on 700                        ~3.5 min  (14 s per epoch)
            cnn2d      5 epochs on 800                            ~4.2 min  (49 s per epoch)
            lstm       <= 6 epochs on 800                         ~4.2 min  (41 s per epoch)
            svm        one fit on 800 (the report's protocol)     ~0.1 min  (4 s)
            total                                                 ~21 min   (budget: 30 min)
            best       musicnn features of the 1000 clips, then   ~3.3 min  (0.15 s per clip; a head
                       a head fitted on 800 and on all 1000                 fit ~20 s; models/best.py)
            patchcnn   40 epochs on 800, then on all 1000         ~13 min   (not a default model)

tiny    for tests: 2 epochs, small batches.
"""

import argparse
import sys

from features.cache import CacheError, ensure_features
from features.dataset import DataError
from features.files import write_advice
from models import DEFAULT_MODELS, REGISTRY, REPORTED
from models.family import ModelError, family_of
from models.hparams import PRESETS, SPLITS, fold_split, is_split
from models.runs import RunError
from models.splits import TrainError
from models.train import default_preset, inputs, run, settings

DEPLOYED = ("best", "patchcnn")  # models that also train the `all` run (what predict.py uses) when no split is given


def _fmt(acc) -> str:
    return "-" if acc is None else f"{100 * acc:.1f}"


def table(results, data_name: str) -> str:
    """Markdown table of run results (one row per run) beside the report's figures, naming the data."""
    note = " (SYNTHETIC genre set: these numbers say nothing about music)" if data_name == "synthetic" else ""
    lines = [f"data: {data_name}{note}", "",
             "| model | split | preset | seed | epochs | top-1 % | top-2 % | top-3 % | report top-1/2/3 % "
             "| wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        epochs = "-" if "epochs_run" not in r else str(r["epochs_run"])
        if r.get("final_epochs"):
            epochs += f" + {r['final_epochs']} on train+val"
        reported = r.get("reported") or REPORTED.get((r["model"], r["split"]))
        rep = "/".join("-" if v is None else str(v) for v in reported) if reported else "-"
        t = r["test"] or {}
        lines.append(f"| {r['model']} | {r['split']} | {r['preset']} | {r['seed']} | {epochs} | "
                     f"{_fmt(t.get('top1'))} | {_fmt(t.get('top2'))} | {_fmt(t.get('top3'))} | {rep} | "
                     f"{r['wall_seconds']:.0f}{' (earlier run)' if r['skipped'] else ''} |")
    return "\n".join(lines)


def splits_for(model: str, hp, split: str, folds: int) -> list:
    """The splits to train ``model`` on: K folds, the given split, or its own (+ ``all`` if deployed)."""
    if folds:
        return [fold_split(folds, i) for i in range(folds)]
    if split:
        return [split]
    return [hp.split] + (["all"] if model in DEPLOYED else [])


def _split(name: str) -> str:
    if not is_split(name):
        raise argparse.ArgumentTypeError(f"{name!r} is not a split: choose from {', '.join(SPLITS)} or k<K>f<i>")
    return name


def os_error_line(err: OSError, runs) -> str:
    """One line for a failed read or write: the file, the runs folder, what to do, and that runs are kept."""
    where = err.filename or runs
    fix = write_advice(err, "--runs DIR")
    return (f"{where}: {err.strerror or err} (runs folder {runs}); {fix}, then run the same command again "
            f"(finished runs and epochs are kept)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated, from {', '.join(REGISTRY)}; default {','.join(DEFAULT_MODELS)}")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help=f"default: {default_preset()} here (report on a GPU, quick on a CPU)")
    p.add_argument("--split", type=_split, help=f"{', '.join(SPLITS)} or one fold k<K>f<i>; "
                   "default: each model's own (best: r80, then all)")
    p.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation grouped by track "
                   "(runs k<K>f0 .. k<K>f<K-1>) instead of --split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="run seeds seed .. seed+N-1")
    p.add_argument("--data", help="GTZAN or any <label>/<audio> folder (default: $GTZAN_DIR, then "
                                  "data/gtzan/, else the synthetic genre set)")
    p.add_argument("--cache", default="cache", help="feature cache root (default cache/)")
    p.add_argument("--runs", default="runs", help="run folders root (default runs/)")
    p.add_argument("--synthetic", type=int, default=20, metavar="N",
                   help="clips per class of the synthetic set used when no data is found (default 20)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--force", action="store_true", help="retrain runs that are already complete")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.folds is not None and (args.folds < 2 or args.split):
        p.error("--folds needs K >= 2 and no --split")
    if args.synthetic < 1:
        p.error("--synthetic must be at least 1")
    return args


def pretrained_embedder(hps: dict, named: bool):
    """(embedder, models left) for the chosen models: the pretrained network that one of them reads
    features of (one at most). Without its weights those models are dropped with one line, so the
    others still run; that is an error (None) only when they were named with ``--models``."""
    embedder, needing, problem = None, [], None
    for model, hp in hps.items():
        try:
            found = family_of(model).embedder(hp, "auto")  # the backbone on the GPU where there is one
        except ModelError as err:
            found, problem = None, err
            needing.append(model)
        embedder = embedder or found
    if not needing:
        return embedder, list(hps)
    print(f"{'error' if named else 'note'}: {', '.join(needing)} skipped: {problem}", file=sys.stderr, flush=True)
    return embedder, (None if named else [m for m in hps if m not in needing])


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = args.preset or default_preset()
    models = [m for m in args.models.split(",") if m]
    try:
        hps = {m: settings(m, preset)[1] for m in models}  # unknown names fail before any feature building
        embedder, models = pretrained_embedder(hps, named=args.models != ",".join(DEFAULT_MODELS))
        if not models:
            return 1
        arrays = ("labels",) + tuple(a for m in models for a in inputs(m, hps[m]))
        cache_dir = ensure_features(args.data, args.cache, arrays=arrays, synthetic=args.synthetic, log=print,
                                    embedder=embedder)
        if preset != "report":
            print(f"preset {preset}: fewer epochs than the report; these numbers are not the report's protocol",
                  flush=True)
        results = []
        for seed in range(args.seed, args.seed + args.seeds):
            for model in models:
                for split in splits_for(model, hps[model], args.split, args.folds):
                    results.append(run(model, cache_dir, args.runs, split=split, preset=preset, seed=seed,
                                       threads=args.threads, force=args.force,
                                       log=lambda line: print(line, flush=True)))
    except (TrainError, CacheError, DataError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {os_error_line(err, args.runs)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: " + ("complete runs are kept as they were (--force retrains them from the start)"
                                 if args.force else "the same command resumes from the last checkpoint (at most 30 s back)"),
              file=sys.stderr)
        return 130
    print()
    print(table(results, cache_dir.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
