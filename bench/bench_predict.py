"""Speed of ``predict.py``: one 30-s file as a whole process, and the time per file over many.

``python bench/bench_predict.py [--quick] [--runs DIR --models NAME,...]`` prints a Markdown section.
Without ``--runs`` it trains tiny runs (split ``all``) on a small synthetic set in a temporary folder:
a tiny preset has the full-size network, so prediction costs what a real run's costs. Per model:

- ``python predict.py one_30s.wav`` wall time, the whole process (imports, loading the run, decode,
  features, model), after one untimed run that warms numba's on-disk cache; goal <= 3 s;
- per-file time over 100 30-s files (``python predict.py FOLDER --jsonl``: (t(100 files) -
  t(1 file)) / 99, so start-up is not counted); goal <= 0.1 s per file on 2 cores (0.25 s for
  ``best``, which runs the pretrained musicnn network on every 3-s patch).

Memory, with the first model: the peak RSS (``ru_maxrss``, measured from a small wrapper process) of
``predict.py long.wav`` on a 2-hour 16-bit mono 22050-Hz WAV (written block by block, ~317 MB; goal
< 1 GiB), and of ``predict.py --jsonl FOLDER`` on 200 and on 2000 1-s files (hard links of one clip),
which must not grow with the file count. ``--quick``: 20 minutes, and 50 and 500 files.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features import synth, usable_cpus  # noqa: E402

GOAL_PROCESS_S, GOAL_RSS_MIB = 3.0, 1024
GOAL_PER_FILE_S = {"best": 0.25}  # others: DEFAULT_GOAL_PER_FILE_S
DEFAULT_GOAL_PER_FILE_S = 0.1


def default_models() -> list:
    return ["best", "patchcnn"]


def train_tiny(models: list, tmp: Path) -> Path:
    """Tiny ``all`` runs of ``models`` on a synthetic set (3 clips of 5 s per genre); the runs root."""
    from features.cache import ensure_features
    from models import train
    from models.family import family_of

    data = synth.write_dataset(tmp / "synthetic", n_per_class=3, duration=5.0)
    hps = {m: train.settings(m, "tiny")[1] for m in models}
    arrays = ("labels",) + tuple(a for m in models for a in train.inputs(m, hps[m]))
    embedder = next((e for e in (family_of(m).embedder(hps[m]) for m in models) if e is not None), None)
    cache_dir = ensure_features(data, cache_root=tmp / "cache", arrays=arrays, progress=False, embedder=embedder)
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


# Runs predict.py and prints its peak RSS in KiB. A wrapper, because Linux carries the RSS of the
# process that forked a child into the child's ru_maxrss: measured from this (large) process, every
# child would report at least this process's size.
_RSS_WRAPPER = ("import resource, subprocess, sys; "
                "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss(argv: list) -> tuple:
    """(peak RSS in MiB, wall seconds) of ``python predict.py argv``; a failure stops the bench."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, sys.executable, str(REPO / "predict.py"), *argv],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    seconds = time.perf_counter() - t0
    if out[0] != "0":
        sys.exit(f"bench_predict: predict.py {' '.join(argv)} failed (exit {out[0]})")
    kib = int(out[1]) if sys.platform != "darwin" else int(out[1]) / 1024  # macOS counts bytes
    return kib / 1024, seconds


def write_long(path: Path, seconds: int, sr: int = 22050) -> Path:
    """A ``seconds``-long 16-bit mono WAV of seeded noise and tones, written a minute at a time."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for start in range(0, seconds, 60):
            t = np.arange(min(60, seconds - start) * sr) / sr
            f.write(0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(len(t)))
    return path


def memory(model: str, runs: Path, tmp: Path, hours: float, counts: tuple) -> dict:
    """Peak RSS of predict.py on one ``hours``-long file and on folders of ``counts`` 1-s files."""
    base = ["--runs", str(runs), "--model", model, "--jsonl"]
    long = write_long(tmp / "long.wav", round(hours * 3600))
    out = {"long": peak_rss(base + [str(long)]), "long_mb": long.stat().st_size / 1e6, "hours": hours}
    long.unlink()
    clip = write_long(tmp / "clip.wav", 1)
    for n in counts:
        folder = tmp / f"small{n}"
        folder.mkdir()
        for i in range(n):
            os.link(clip, folder / f"{i:05d}.wav")
        out[n] = peak_rss(base + [str(folder)])
        shutil.rmtree(folder)
    return out


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
    hours, counts = (1 / 3, (50, 500)) if args.quick else (2.0, (200, 2000))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = Path(args.runs) if args.runs else train_tiny(models, tmp)
        folder = synth.write_dataset(tmp / "many", n_per_class=n_files // len(synth.GENRES), duration=30.0)
        one = sorted(folder.glob("*/*.wav"))[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "predict.py"), "--help"], stdout=subprocess.DEVNULL, check=True)
        help_s = time.perf_counter() - t0
        results = {m: bench_model(m, runs, one, folder, repeats) for m in models}
        shutil.rmtree(folder)  # room for the long file
        mem = memory(models[0], runs, tmp, hours, counts)
    print("## predict.py\n")
    print(f"`python bench/bench_predict.py{' --quick' if args.quick else ''}` on {usable_cpus()} usable cores "
          f"(`OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}`); tiny `all` runs "
          f"(full-size networks) unless `--runs` was given. `predict.py --help`: {help_s:.2f} s.\n")
    print(f"| model | one 30-s file, whole process (goal <= {GOAL_PROCESS_S:g} s) | per 30-s file over {n_files} "
          f"| its goal |")
    print("|---|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['process']:.2f} s | {r['per_file']:.3f} s | "
              f"<= {GOAL_PER_FILE_S.get(m, DEFAULT_GOAL_PER_FILE_S):g} s |")
    (rss, seconds), (few, many) = mem["long"], counts
    print(f"\nPeak RSS with {models[0]} (goal < {GOAL_RSS_MIB} MiB): one {mem['hours'] * 60:g}-min 16-bit mono "
          f"22050-Hz WAV ({mem['long_mb']:.0f} MB) {rss:.0f} MiB in {seconds:.0f} s; `--jsonl` over {few} "
          f"1-s files {mem[few][0]:.0f} MiB ({mem[few][1]:.0f} s), over {many} {mem[many][0]:.0f} MiB "
          f"({mem[many][1]:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
