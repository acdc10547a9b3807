"""The backbone in bfloat16 against float32: speed, and the accuracy of ``best`` by the pool CV.

``python bench/bench_precision.py [--quick]`` prints a Markdown section:

- seconds per 30-s clip (10 patches) of ``models.musicnn.embed`` at each precision and batch size on
  the usable cores, best of 5 alternated repeats (``--quick``: 2);
- the pool cross-validation of ``bench/bench_pool.py`` (5 folds grouped by track over the 408 real
  files of ``../shared/data``, preset quick, seed 0) for ``best`` with its features computed at each
  precision, each in its own cache and runs folder: top-1 on all held-out files and on the 2-3 s
  excerpts, mean +- std over folds, the paired differences, and how many held-out genres change.
  ``--quick`` skips it.

bfloat16 is the default where the CPU has bf16 units (``musicnn.default_precision``) only because
this accuracy stays within the noise; the bench forces each precision by replacing that default.
"""

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import bench_pool  # noqa: E402
from features import usable_cpus  # noqa: E402
from models import musicnn  # noqa: E402
from models import runs as run_store  # noqa: E402
from models.hparams import fold_split  # noqa: E402

K, PRESET = 5, "quick"


def speed(repeats: int) -> dict:
    """(precision, batch) -> best seconds per 10 patches."""
    import torch

    torch.set_num_threads(usable_cpus())
    net = musicnn.load()
    x = np.random.default_rng(0).uniform(0, 3, (20, musicnn.PATCH_FRAMES, musicnn.N_MELS)).astype(np.float32)
    best = {}
    for r in range(repeats):
        order = musicnn.PRECISIONS if r % 2 == 0 else musicnn.PRECISIONS[::-1]
        for batch in (2, 10, 20):
            for precision in order:
                musicnn.embed(net, x[:batch], batch, precision=precision)  # warm-up of this shape
                t0 = time.perf_counter()
                musicnn.embed(net, x, batch, precision=precision)
                key = (precision, batch)
                best[key] = min(best.get(key, 1e9), (time.perf_counter() - t0) / 2)
    return best


def pool_cv(tmp: Path, pool: Path, precision: str) -> tuple:
    """(per-fold (top-1 all, top-1 2-3 s), per-fold predictions) of best at ``precision``."""
    import run_all

    musicnn.default_precision = lambda device="cpu": precision
    musicnn.embedder.cache_clear()
    out = tmp / precision
    with contextlib.redirect_stdout(io.StringIO()):
        rc = run_all.main(["--data", str(pool), "--models", "best", "--folds", str(K), "--preset", PRESET,
                           "--cache", str(out / "cache"), "--runs", str(out / "runs")])
    if rc:
        sys.exit(f"bench_precision: run_all.py failed at {precision}")
    predictions = [run_store.load_predictions(run_store.verify_run(
        run_store.run_dir_for(out / "runs", "pool", "best", fold_split(K, i), PRESET, 0))) for i in range(K)]
    return np.array(bench_pool.fold_scores(out / "runs", "best", K, PRESET)) * 100, predictions


def pool_lines(tmp: Path) -> list:
    pool = bench_pool.make_pool(tmp / "pool")
    (a, pa), (b, pb) = (pool_cv(tmp, pool, p) for p in musicnn.PRECISIONS)
    changed = sum(int((x.scores.argmax(1) != y.scores.argmax(1)).sum()) for x, y in zip(pa, pb))
    n = sum(len(x.labels) for x in pa)
    lines = ["", f"Pool CV of `best` ({K} folds by track, 408 real files, preset {PRESET}), top-1 %:", "",
             "| features | all held-out files | 2-3 s excerpts |", "|---|---|---|"]
    for name, s in (("float32", a), ("bfloat16", b)):
        lines.append(f"| {name} | {s[:, 0].mean():.1f} ± {s[:, 0].std(ddof=1):.1f} | "
                     f"{s[:, 1].mean():.1f} ± {s[:, 1].std(ddof=1):.1f} |")
    d = b - a
    lines += [f"| paired difference | {d[:, 0].mean():+.1f} ± {d[:, 0].std(ddof=1):.1f} | "
              f"{d[:, 1].mean():+.1f} ± {d[:, 1].std(ddof=1):.1f} |", "",
              f"Held-out files whose predicted genre changes: {changed} of {n}."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 repeats, no pool CV")
    args = p.parse_args(argv)
    times = speed(2 if args.quick else 5)
    lines = ["## Backbone precision (`bench/bench_precision.py`)", "",
             f"Default here: {musicnn.default_precision()} (`musicnn.default_precision`: bfloat16 where the CPU "
             f"has AVX512-BF16 or AMX). Seconds per 30-s clip (10 patches) of `musicnn.embed` on "
             f"{usable_cpus()} threads, best of {2 if args.quick else 5} alternated repeats:", "",
             "| batch | float32 | bfloat16 | speed-up |", "|---|---|---|---|"]
    for batch in (2, 10, 20):
        f32, bf16 = times[("float32", batch)], times[("bfloat16", batch)]
        lines.append(f"| {batch} | {f32:.3f} s | {bf16:.3f} s | {f32 / bf16:.2f}x |")
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            lines += pool_lines(Path(tmp))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
