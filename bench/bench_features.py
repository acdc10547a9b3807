"""Whole-dataset feature extraction: decode + dB mel + image views for every clip, and the disk write.

Runs ``features.cache.build_cache`` on GTZAN when it is found (``--data`` / ``$GTZAN_DIR`` /
``data/gtzan``), else on 1000 synthetic 30-s clips (``--n``), once on 1 thread and once on all cores,
and reports compute (decode, mel, images) and write time separately, as the manifest records them.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import cache, dataset, synth, usable_cpus  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", help="dataset folder (default: GTZAN if found, else synthetic)")
    p.add_argument("--n", type=int, default=1000, help="synthetic clips when GTZAN is absent")
    p.add_argument("--quick", action="store_true", help="100 synthetic clips, all cores only")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_features-"))
    try:
        root = dataset.find_data(args.data)
        if root is None:
            n = 100 if args.quick else args.n
            root = synth.write_dataset(tmp / "synthetic", n_per_class=max(1, n // 10))
            what = f"{n} synthetic 30-s clips (no GTZAN on this machine)"
        else:
            what = f"`{root}`"
        rows = []
        for jobs in ([usable_cpus()] if args.quick else [1, usable_cpus()]):
            c = cache.open_cache(cache.build_cache(root, tmp / f"cache{jobs}", jobs=jobs, progress=False))
            t, n = c.manifest["timings"], c.manifest["n"]
            compute = t["decode"] + t["mel"] + t["images"]
            rows.append(f"| {jobs} | {n} | {t['decode']:.1f} | {t['mel']:.1f} | {t['images']:.1f} | "
                        f"{compute:.1f} | {1000 * compute / n:.1f} | {1000 * compute / n:.1f} s | "
                        f"{t['write']:.1f} |")
            shutil.rmtree(c.root)
        print(f"## Feature cache build (`bench/bench_features.py`)\n\nData: {what}.\n\n"
              "| threads | clips | decode s | mel s | images s | compute s | compute ms/clip | "
              "compute for 1000 clips | write s |\n|---|---|---|---|---|---|---|---|---|\n"
              + "\n".join(rows)
              + "\n\nGoal: 1000 clips decoded + mel + images in <= 10 s of compute on 2 cores. "
              "Write = copying into the page-cache-backed memmaps, flushing and compacting.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
