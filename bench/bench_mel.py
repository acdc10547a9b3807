"""Benchmark of features.mel.mel_db against librosa and a plain numpy/scipy version.

Usage: .venv/bin/python bench/bench_mel.py [--quick]

Prints a Markdown section: ms per 30-s clip for librosa, numpy/scipy, ours on 1 thread and on all
cores, their speed-up over librosa, and the largest dB difference to librosa. Every repeat runs all
methods one after the other, so load from other processes hits them alike.
Uses the real 30-s clips of ../shared/data/gtzan_sample when present, else synthetic noise.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import scipy.fft
import soundfile as sf
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.mel import mel_db, mel_filterbank  # noqa: E402

SAMPLE_DIR = REPO.parent / "shared" / "data" / "gtzan_sample"
SR, N_FFT, HOP, N_SAMPLES = 22050, 2048, 512, 661500


def load_clips():
    """(n, 661500) float32 clips and a description of where they came from."""
    paths = sorted(SAMPLE_DIR.glob("*/*.wav"))
    if not paths:
        rng = np.random.default_rng(0)
        return (0.1 * rng.standard_normal((8, N_SAMPLES))).astype(np.float32), \
            "8 clips of synthetic white noise (../shared/data absent)"
    clips = np.zeros((len(paths), N_SAMPLES), dtype=np.float32)
    for i, path in enumerate(paths):
        pcm, _ = sf.read(path, dtype="int16")
        n = min(len(pcm), N_SAMPLES)
        clips[i, :n] = pcm[:n] / np.float32(32768)
    return clips, f"{len(paths)} real 30-s GTZAN clips (gtzan_sample), cut or padded to 661500"


def numpy_mel_db(y, fb, window):
    """Plain numpy/scipy reference: framed float32 FFT, dense float32 mel matmul, power_to_db."""
    padded = np.pad(y, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = scipy.fft.rfft(frames * window, axis=1, workers=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    mel = fb @ power.T
    db = 10.0 * np.log10(np.maximum(np.float32(1e-10), mel))
    return np.maximum(db, db.max() - np.float32(80.0))


def timed(fn, n_clips, wall, cpu):
    """Run fn once; append its wall-clock and calling-thread CPU ms per clip; return its result."""
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    result = fn()
    cpu.append((time.thread_time() - start_cpu) * 1e3 / n_clips)
    wall.append((time.perf_counter() - start_wall) * 1e3 / n_clips)
    return result


def _time_and_ratio(ms, librosa_ms):
    """['median ms', 'librosa's median / this median'] as table cells."""
    return [f"{np.median(ms):.2f}", f"{np.median(librosa_ms) / np.median(ms):.2f}x"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7

    import librosa  # reference only, never imported by the product code

    clips, source = load_clips()
    n = len(clips)
    n_cores = numba.config.NUMBA_NUM_THREADS
    fb = mel_filterbank(SR, N_FFT)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)

    def run_librosa():
        return np.stack([librosa.power_to_db(librosa.feature.melspectrogram(
            y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)) for y in clips])

    def run_numpy():
        return np.stack([numpy_mel_db(y, fb, window) for y in clips])

    def run_ours(threads, batch):
        numba.set_num_threads(threads)
        if batch:
            return mel_db(clips)
        return np.stack([mel_db(y) for y in clips])

    methods = {
        "librosa 0.11 (1 thread)": run_librosa,
        "numpy/scipy float32 (1 thread)": run_numpy,
        "ours, 1 thread, batch": lambda: run_ours(1, True),
        "ours, 1 thread, clip by clip": lambda: run_ours(1, False),
        f"ours, {n_cores} threads, batch": lambda: run_ours(n_cores, True),
        f"ours, {n_cores} threads, clip by clip": lambda: run_ours(n_cores, False),
    }
    compile_start = time.perf_counter()
    mel_db(clips[:1])  # numba compiles (or loads its cache) here, outside the timings
    compile_s = time.perf_counter() - compile_start
    # librosa's first call imports and jit-compiles its helpers (~3x slower): keep it out too.
    librosa.power_to_db(librosa.feature.melspectrogram(y=clips[0], sr=SR))
    numpy_mel_db(clips[0], fb, window)

    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    results = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeats):
            for name, fn in methods.items():
                results[name] = timed(fn, n, wall[name], cpu[name])
    numba.set_num_threads(n_cores)

    decode = []
    for path in sorted(SAMPLE_DIR.glob("*/*.wav"))[:10] * repeats:
        start = time.perf_counter()
        pcm, _ = sf.read(path, dtype="int16")
        pcm.astype(np.float32) / np.float32(32768)
        decode.append((time.perf_counter() - start) * 1e3)

    librosa_name = "librosa 0.11 (1 thread)"
    reference = results[librosa_name]
    print("## dB-mel spectrogram (features/mel.py)")
    print()
    print(f"{source}; 128 mel bands x 1292 frames per clip; {repeats} interleaved repeats.")
    print()
    print("| method | wall ms / clip | speed-up (wall) | CPU ms / clip | speed-up (CPU) "
          "| max abs diff vs librosa (dB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in methods:
        error = float(np.abs(results[name] - reference).max())
        row = [name, *_time_and_ratio(wall[name], wall[librosa_name])]
        # CPU time of the calling thread only means something when it does all the work.
        row += _time_and_ratio(cpu[name], cpu[librosa_name]) if "1 thread" in name else ["", ""]
        print("| " + " | ".join(row) + f" | {error:.2e} |")
    if decode:
        print(f"| decode 30-s wav (soundfile, int16 -> float32) | {np.median(decode):.2f} "
              "| | | | |")
    print()
    print("Notes:")
    print(f"- threads: numba {numba.threading_layer()} layer, {n_cores} threads available; "
          "BLAS limited to 1 thread (threadpoolctl) for librosa and numpy/scipy.")
    print("- ms: median over repeats; speed-up: librosa's median / the method's median. CPU: "
          "time.thread_time() of the calling thread, which time-slicing by other processes does "
          "not inflate (they still compete for caches and memory bandwidth).")
    print("- librosa's FFT runs in float64 (its window is float64); ours and numpy/scipy in float32.")
    print("- 'batch' is one mel_db call on the (n, 661500) array; 'clip by clip' one call per clip "
          "(with several threads it splits one clip's frames across them).")
    print(f"- first mel_db call in this process (numba compile or cache load): {compile_s:.2f} s.")
    print(f"- load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; other "
          "processes may share them, so compare ratios within one run, not across runs.")


if __name__ == "__main__":
    main()
