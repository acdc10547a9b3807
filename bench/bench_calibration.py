"""How far ``best``'s top probability can be trusted: the tag writer's default ``--min-probability``.

Pool cross-validation of ``best`` as ``bench_pool.py`` runs it (every real GTZAN file of
``../shared/data``, 5 folds by track, preset quick, seed 0); over all held-out files, for each
threshold P: the share of files whose top probability is at least P (they get a genre, the others
``unknown``) and the top-1 accuracy among them, with the reliability table (accuracy per band of top
probability). The default is the smallest P whose kept files are at least ``TARGET`` right: a wrong tag
in a user's file costs more than a missing one. Prints a Markdown section.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pool import SHARED, _predictions, cross_validate  # noqa: E402

TARGET = 0.90
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def held_out(runs: Path, k: int, preset: str) -> tuple:
    """(top probability, whether the top genre is right) of every held-out file of the k folds."""
    top, right = [], []
    for i in range(k):
        p = _predictions(runs, "best", k, i, preset)
        probs = np.exp(p.scores)
        top.append(probs.max(1))
        right.append(probs.argmax(1) == p.labels)
    return np.concatenate(top), np.concatenate(right)


def table(top: np.ndarray, right: np.ndarray) -> tuple:
    """(Markdown lines of the threshold table, the chosen default)."""
    lines = ["| --min-probability P | files given a genre | top-1 among them |", "|---:|---:|---:|"]
    chosen = None
    for t in THRESHOLDS:
        kept = top >= t
        acc = right[kept].mean() if kept.any() else float("nan")
        lines.append(f"| {t:.1f} | {100 * kept.mean():.1f} % | {100 * acc:.1f} % |")
        if chosen is None and acc >= TARGET:
            chosen = t
    return lines, chosen


def reliability(top: np.ndarray, right: np.ndarray) -> list:
    lines = ["| top probability | files | top-1 |", "|---|---:|---:|"]
    edges = np.array([0.0, 0.3, 0.5, 0.7, 0.9, 1.0001])
    for a, b in zip(edges[:-1], edges[1:]):
        band = (top >= a) & (top < b)
        if band.any():
            lines.append(f"| {a:.1f}-{min(b, 1):.1f} | {band.sum()} | {100 * right[band].mean():.1f} % |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 folds of the tiny preset (a smoke test)")
    args = p.parse_args(argv)
    if not (SHARED / "README.md").exists():
        print(f"## Calibration of best\n\n{SHARED} not present: skipped.")
        return 0
    k, preset = (2, "tiny") if args.quick else (5, "quick")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rc = cross_validate(tmp, "best", k, preset)
        if rc:
            return rc
        top, right = held_out(tmp / "runs", k, preset)
    lines, chosen = table(top, right)
    print("\n".join(["## Calibration of best (`bench/bench_calibration.py`)", "",
                     f"Pool CV of `best` ({len(top)} held-out real GTZAN files of `../shared/data`, {k} folds by "
                     f"track, preset {preset}, seed 0). Files whose top probability is below P get `unknown`.", "",
                     *lines, "", f"Smallest P whose kept files are >= {100 * TARGET:.0f} % right: "
                     f"{'none' if chosen is None else f'{chosen:.1f}'}.", "", *reliability(top, right)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
