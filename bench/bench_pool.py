"""``best``, ``patchcnn``, their average, the report's SVM and a majority baseline in 5-fold-by-track
CV on real GTZAN excerpts.

The pool is every audio file of ``../shared/data`` (29 full clips, 80 openings of 15-20 s, 299
peak-normalised excerpts of 2-3 s), linked as ``<genre>/<set>__<file>`` since the sets share file
names; a track's files (its clip, opening and excerpt) always share a fold. Each fold is scored on
all its held-out files and on its 2-3 s excerpts alone (the closest stand-in for excerpts of tracks
outside the pool). Prints a Markdown section; ``--quick``: 2 folds of the tiny preset (a smoke test).
"""

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run_all  # noqa: E402
from features.cache import open_cache  # noqa: E402
from features.dataset import GENRES  # noqa: E402
from models import top_k_accuracy  # noqa: E402
from models import runs as run_store  # noqa: E402
from models.hparams import fold_split  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("gtzan_sample", "gtzan_15s", "gtzan_2s")
MODELS = "best,patchcnn,svm"


def make_pool(out: Path) -> Path:
    """Symlink every clip of the shared sets into ``out/<genre>/<set>__<file>``."""
    for s in SETS:
        for f in sorted((SHARED / s).glob("*/*.wav")):
            (out / f.parent.name).mkdir(parents=True, exist_ok=True)
            (out / f.parent.name / f"{s}__{f.name}").symlink_to(f)
    return out


def cross_validate(tmp: Path, models: str, k: int, preset: str) -> int:
    """Train ``models`` on the pool in ``k`` folds by track: cache ``tmp/cache``, runs ``tmp/runs``; the
    exit status (run_all's log goes to stderr when it fails)."""
    pool = make_pool(tmp / "pool")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        rc = run_all.main(["--data", str(pool), "--models", models, "--folds", str(k), "--preset", preset,
                           "--cache", str(tmp / "cache"), "--runs", str(tmp / "runs")])
    if rc:
        print(log.getvalue(), file=sys.stderr)
    return rc


def _predictions(runs: Path, model: str, k: int, fold: int, preset: str):
    """The test predictions of fold ``fold`` of ``model``, read through the run store."""
    run_dir = run_store.run_dir_for(runs, "pool", model, fold_split(k, fold), preset, 0)
    return run_store.load_predictions(run_store.verify_run(run_dir))


def fold_scores(runs: Path, models: str, k: int, preset: str) -> list:
    """Per fold: (top-1 on all held-out files, top-1 on the held-out 2-3 s excerpts) of one model, or
    of the mean log-probabilities of several (``"best+patchcnn"``)."""
    out = []
    for i in range(k):
        scores = 0
        for model in models.split("+"):
            p = _predictions(runs, model, k, i, preset)
            scores, labels, files = scores + p.scores, p.labels, p.files
        short = np.array(["gtzan_2s__" in f for f in files])
        out.append((top_k_accuracy(labels, scores, 1), top_k_accuracy(labels[short], scores[short], 1)))
    return out


def majority_scores(cache_dir: Path, runs: Path, k: int, preset: str) -> list:
    """Per fold: the same two accuracies for always answering the training part's commonest class."""
    c = open_cache(cache_dir)
    out = []
    for i in range(k):
        test = set(_predictions(runs, "svm", k, i, preset).files)
        is_test = np.array([f in test for f in c.files])
        commonest = np.bincount(c.labels[~is_test]).argmax()
        short = np.array(["gtzan_2s__" in f for f in c.files])
        out.append((np.mean(c.labels[is_test] == commonest), np.mean(c.labels[is_test & short] == commonest)))
    return out


def row(name: str, scores: list) -> str:
    a = 100 * np.array(scores)
    sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(2)
    return (f"| {name} | {a[:, 0].mean():.1f} ± {sd[0]:.1f} | {a[:, 1].mean():.1f} ± {sd[1]:.1f} | "
            f"{' '.join(f'{v:.0f}' for v in a[:, 0])} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if not (SHARED / "README.md").exists():
        print(f"## Pool cross-validation\n\n{SHARED} not present: skipped.")
        return 0
    k, preset = (2, "tiny") if args.quick else (5, "quick")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rc = cross_validate(tmp, MODELS, k, preset)
        if rc:
            return rc
        n = open_cache(tmp / "cache" / "pool").manifest["n"]
        lines = [f"## Pool cross-validation (real GTZAN excerpts, {k}-fold by track)", "",
                 f"{n} files of `../shared/data` ({', '.join(SETS)}) as one pool of {len(GENRES)} genres; "
                 f"`run_all.py --data POOL --models {MODELS} --folds {k} --preset {preset}`, seed 0. "
                 "Top-1 % mean ± std over folds, on all held-out files and on the held-out 2-3 s excerpts.", "",
                 "| model | all held-out files | 2-3 s excerpts | per fold (all) |", "|---|---:|---:|---|",
                 row("best (musicnn features, logistic head)", fold_scores(tmp / "runs", "best", k, preset)),
                 row(f"patchcnn (from scratch, {preset})", fold_scores(tmp / "runs", "patchcnn", k, preset)),
                 row("best + patchcnn (mean log-probabilities)", fold_scores(tmp / "runs", "best+patchcnn", k, preset)),
                 row("svm (the report's)", fold_scores(tmp / "runs", "svm", k, preset)),
                 row("majority class", majority_scores(tmp / "cache" / "pool", tmp / "runs", k, preset))]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
