"""Benchmark of models.musicnn.embed: seconds per 30-s clip (10 patches) by batch size and threads.

Usage: .venv/bin/python bench/bench_musicnn.py [--repeats N] [--quick]

Prints a Markdown table: for 1 and 2 torch threads and 1, 2, 5, 10 patches per forward pass, the
best and the median time over the repeats to embed one clip's 10 patches; then the load time, and
the whole feature of a 30-s 22050-Hz clip as the cache computes it (resample to 16 kHz, musicnn's
log mel, patches, network; goal <= 0.15 s on 2 cores).
Every repeat runs all the settings one after the other, so load from other processes hits them
alike. Needs the musicnn wheel (``make setup``).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import musicnn  # noqa: E402

THREADS = (1, 2)
BATCH_SIZES = (1, 2, 5, 10)
PATCHES_PER_CLIP = 10  # 30 s / (187 hops of 256 samples at 16 kHz)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    start = time.perf_counter()
    net = musicnn.load()
    load_s = time.perf_counter() - start
    clip = np.random.default_rng(0).uniform(0, 4, (PATCHES_PER_CLIP, musicnn.PATCH_FRAMES, musicnn.N_MELS))
    clip = clip.astype(np.float32)
    settings = [(threads, batch) for threads in THREADS for batch in BATCH_SIZES]
    times = {setting: [] for setting in settings}
    for repeat in range(args.repeats + 1):  # the first round warms oneDNN's kernels up, untimed
        for threads, batch in settings:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            musicnn.embed(net, clip, batch)
            if repeat:
                times[threads, batch].append(time.perf_counter() - start)
    print(f"## musicnn.embed, seconds per 30-s clip ({PATCHES_PER_CLIP} patches), best / median of "
          f"{args.repeats}, torch {torch.__version__}\n")
    print("| threads | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " |")
    print("|---" * (len(BATCH_SIZES) + 1) + "|")
    for threads in THREADS:
        cells = [f"{min(times[threads, b]):.3f} / {statistics.median(times[threads, b]):.3f}"
                 for b in BATCH_SIZES]
        print(f"| {threads} | " + " | ".join(cells) + " |")
    print(f"\nload (read + check the checkpoint, build the network): {load_s:.2f} s")
    print(f"\nwhole feature of one 30-s clip at 22050 Hz, {torch.get_num_threads()} threads, batch "
          f"{musicnn.EMBED_BATCH} (`features.backbone.patches` + `models.musicnn.embedder().embed`), best / "
          f"median of {args.repeats}: {whole_clip(args.repeats)} (goal <= 0.15 s on 2 cores)")


def whole_clip(repeats: int) -> str:
    """Seconds from a 30-s 22050-Hz waveform to its (10, 1706) features, as the cache computes them."""
    from features import backbone, synth

    torch.set_num_threads(max(THREADS))
    y = np.asarray(synth.generate(5, 0), dtype=np.float32)  # 30 s of synthetic jazz at 22050 Hz
    embedder = musicnn.embedder()
    times = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        embedder.embed(backbone.patches(y, 22050))
        if repeat:
            times.append(time.perf_counter() - start)
    return f"{min(times):.3f} / {statistics.median(times):.3f} s"


if __name__ == "__main__":
    main()
