"""Speed of ``predict.py``: one 30-s file as a whole process, and the time per file over many.

``python bench/bench_predict.py [--quick] [--runs DIR --models NAME,...]`` prints a Markdown section.
Without ``--runs`` it trains tiny runs (split ``all``) on a small synthetic set in a temporary folder:
a tiny preset has the full-size network, so prediction costs what a real run's costs. Per model:

- ``python predict.py one_30s.wav`` wall time, the whole process (imports, loading the run, decode,
  features, model), after one untimed run that warms numba's on-disk cache; goal <= 3 s;
- per-file time over 100 30-s files (``python predict.py FOLDER --jsonl``: (t(100 files) -
  t(1 file)) / 99, so start-up is not counted); goal <= 0.1 s per file on 2 cores.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features import synth, usable_cpus  # noqa: E402

GOAL_PROCESS_S, GOAL_PER_FILE_S = 3.0, 0.1


def default_models() -> list:
    return ["best"] if (REPO / "models" / "best.py").exists() else ["cnn1d_mel", "svm"]


def train_tiny(models: list, tmp: Path) -> Path:
    """Tiny ``all`` runs of ``models`` on a synthetic set (3 clips of 5 s per genre); the runs root."""
    from features.cache import ensure_features
    from models import train

    data = synth.write_dataset(tmp / "synthetic", n_per_class=3, duration=5.0)
    arrays = ("labels", "lengths") + tuple({train.settings(m, "tiny")[1].view for m in models})
    cache_dir = ensure_features(data, cache_root=tmp / "cache", arrays=arrays, progress=False)
    for m in models:
        train.run(m, cache_dir, runs_root=tmp / "runs", split="all", preset="tiny", log=lambda line: None)
    return tmp / "runs"


def timed(argv: list) -> float:
    """Wall seconds of ``python predict.py argv`` (its output discarded; a failure stops the bench)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "predict.py"), *argv], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"bench_predict: predict.py {' '.join(argv)} failed: {r.stderr.strip()}")
    return seconds


def bench_model(model: str, runs: Path, one: Path, folder: Path, repeats: int) -> dict:
    base = ["--runs", str(runs), "--model", model, "--jsonl"]
    timed(base + [str(one)])  # warms numba's cache and the OS file cache
    process = statistics.median(timed(base + [str(one)]) for _ in range(repeats))
    n = len(list(folder.glob("*/*.wav")))
    many = statistics.median(timed(base + [str(folder)]) for _ in range(repeats))
    return {"process": process, "per_file": (many - process) / (n - 1), "n": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 files instead of 100, one timing each")
    p.add_argument("--runs", help="an existing runs root (default: train tiny runs in a temporary folder)")
    p.add_argument("--models", help=f"comma-separated (default {','.join(default_models())})")
    args = p.parse_args(argv)
    models = args.models.split(",") if args.models else default_models()
    n_files, repeats = (20, 1) if args.quick else (100, 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = Path(args.runs) if args.runs else train_tiny(models, tmp)
        folder = synth.write_dataset(tmp / "many", n_per_class=n_files // len(synth.GENRES), duration=30.0)
        one = sorted(folder.glob("*/*.wav"))[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "predict.py"), "--help"], stdout=subprocess.DEVNULL, check=True)
        help_s = time.perf_counter() - t0
        results = {m: bench_model(m, runs, one, folder, repeats) for m in models}
    print("## predict.py\n")
    print(f"`python bench/bench_predict.py{' --quick' if args.quick else ''}` on {usable_cpus()} usable cores "
          f"(`OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}`); tiny `all` runs "
          f"(full-size networks) unless `--runs` was given. `predict.py --help`: {help_s:.2f} s.\n")
    print(f"| model | one 30-s file, whole process (goal <= {GOAL_PROCESS_S:g} s) "
          f"| per 30-s file over {n_files} (goal <= {GOAL_PER_FILE_S:g} s) |")
    print("|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['process']:.2f} s | {r['per_file']:.3f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
