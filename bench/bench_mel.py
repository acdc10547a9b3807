"""Benchmark of features.mel.mel_db against librosa and a plain numpy/scipy version.

Usage: .venv/bin/python bench/bench_mel.py [--quick] [--musicnn-only]

Prints a Markdown section: ms per 30-s clip for librosa, audioFlux (when installed:
requirements-bench.txt), numpy/scipy, ours on 1 thread and on all cores, their speed-up over
librosa, the largest dB difference to librosa, and the time split of ours by stage. Every repeat runs
all methods one after the other, so load from other processes hits them alike. Then a section on
musicnn's input (mel_power at 16 kHz, n_fft 512, hop 256, 96 bands, reflect padding, and
musicnn_input) against librosa; ``--musicnn-only`` prints that section alone.
Uses the real 30-s clips of ../shared/data/gtzan_sample when present, else synthetic noise.
"""
import argparse
import functools
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import rocket_fft
import scipy.fft
import soundfile as sf
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features import mel, usable_cpus  # noqa: E402
from features.mel import (MUSICNN_HOP, MUSICNN_N_FFT, MUSICNN_N_MELS, MUSICNN_SR,  # noqa: E402
                          log_compress, mel_db, mel_filterbank, mel_power, musicnn_input)

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


def audioflux_mel_db():
    """audioFlux's dB mel as a function of one clip, or None when audioFlux is not installed.

    Not the same definition as librosa's (uncentred frames: 1288 for a 30-s clip), so it is timed
    but not compared.
    """
    try:
        import audioflux
    except ImportError:
        return None

    def run(y):
        spec, _ = audioflux.mel_spectrogram(y, num=128, radix2_exp=11, samplate=SR,
                                            slide_length=HOP)
        return audioflux.utils.power_to_db(spec)
    return run


@numba.njit
def _stage(clips, stage, window, band_start, band_offset, band_weights, out):
    """One stage of mel._mel_blocks alone over every block of every clip (0 framing, 1 FFT,
    2 power, 3 mel, 4 dB, 5 output, 6 the sample check), on one thread, buffers as it has them."""
    block, n_fft = mel.FRAMES_PER_BLOCK, window.shape[0]
    frames = np.zeros((block, n_fft), np.float32)
    spectrum = np.empty((n_fft // 2 + 1, block), np.complex64)
    power = np.zeros((n_fft // 2 + 1, block), np.float32)
    db = np.ones((band_start.shape[0], block), np.float32)
    mantissa = np.empty(db.size, np.float32)
    exponent = np.empty(db.size, np.int32)
    axes = np.array([1])
    peak = 0  # returned, so the sample check is not optimised away
    for c in range(clips.shape[0]):
        for first in range(0, out.shape[2], block):
            count = min(block, out.shape[2] - first)
            if stage == 0:
                for j in range(count):
                    mel._window_frame(clips[c], (first + j) * HOP - n_fft // 2, window, frames[j])
            elif stage == 1:
                rocket_fft.r2c(frames, spectrum.T, axes, True, 1.0, 1)
            elif stage == 2:
                mel._power(spectrum, power)
            elif stage == 3:
                mel._mel_bands(power, band_start, band_offset, band_weights, db)
            elif stage == 4:
                mel._power_to_db(db.reshape(db.size), np.float32(1e-10), 0.0, mantissa, exponent)
            elif stage == 5:
                mel._store(db, count, out[c, :, first:first + count])
            else:
                lo = min(first * HOP, clips.shape[1])
                peak = max(peak, mel._abs_max_bits(clips[c, lo:min((first + block) * HOP,
                                                                  clips.shape[1])]))
    return peak


STAGES = ("framing (window into the FFT buffer)", "FFT (rocket-fft r2c, float32)", "power",
          "mel (sparse Slaney projection)", "dB (power_to_db)", "output (store the block)",
          "sample check (NaN / inf / huge)")


def time_split(clips, repeats):
    """Markdown rows: median thread-CPU ms per clip of each stage of ours, one thread."""
    numba.set_num_threads(1)
    window, bands = mel._analysis_setup(float(SR), N_FFT, 128, 0.0, SR / 2.0)
    out = np.empty((len(clips), 128, mel.n_frames(clips.shape[1])), np.float32)
    for stage in range(len(STAGES)):
        _stage(clips[:1], stage, window, *bands, out)
    ms = {stage: [] for stage in range(len(STAGES))}
    for _ in range(repeats):
        for stage in ms:
            start = time.thread_time()
            _stage(clips, stage, window, *bands, out)
            ms[stage].append((time.thread_time() - start) * 1e3 / len(clips))
    start = time.thread_time()
    mel_db(clips)
    whole = (time.thread_time() - start) * 1e3 / len(clips)
    rows = [f"| {name} | {np.median(ms[stage]):.3f} |" for stage, name in enumerate(STAGES)]
    rows.append(f"| sum of the stages | {sum(np.median(v) for v in ms.values()):.3f} |")
    rows.append(f"| whole mel_db call (batch; adds the top_db floor and allocation) | {whole:.3f} |")
    return rows


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
    parser.add_argument("--musicnn-only", action="store_true",
                        help="only the section on musicnn's input")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7

    import librosa  # reference only, never imported by the product code

    clips, source = load_clips()
    if args.musicnn_only:
        musicnn_section(clips, source, repeats)
        return
    n = len(clips)
    n_cores = numba.config.NUMBA_NUM_THREADS
    fb = mel_filterbank(SR, N_FFT)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)

    def run_librosa():
        return np.stack([librosa.power_to_db(librosa.feature.melspectrogram(
            y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)) for y in clips])

    af_mel_db = audioflux_mel_db()

    def run_audioflux():
        return np.stack([af_mel_db(y) for y in clips])

    def run_numpy():
        return np.stack([numpy_mel_db(y, fb, window) for y in clips])

    def run_ours(threads, batch):
        numba.set_num_threads(threads)
        if batch:
            return mel_db(clips)
        return np.stack([mel_db(y) for y in clips])

    methods = {
        "librosa 0.11 (1 thread)": run_librosa,
        **({"audioFlux 0.1.9 (1 thread)": run_audioflux} if af_mel_db else {}),
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
    if af_mel_db:
        af_mel_db(clips[0])

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
        same_shape = results[name].shape == reference.shape
        error = f"{float(np.abs(results[name] - reference).max()):.2e}" if same_shape else "n/a"
        row = [name, *_time_and_ratio(wall[name], wall[librosa_name])]
        # CPU time of the calling thread only means something when it does all the work.
        row += _time_and_ratio(cpu[name], cpu[librosa_name]) if "1 thread" in name else ["", ""]
        print("| " + " | ".join(row) + f" | {error} |")
    if not af_mel_db:
        print("| audioFlux | not installed (pip install -r requirements-bench.txt) | | | | |")
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
    print("- audioFlux: `mel_spectrogram(num=128, radix2_exp=11, slide_length=512)` + "
          "`power_to_db`; uncentred frames (1288 per clip), so not compared with librosa.")
    print(f"- load average at the end: {os.getloadavg()[0]:.1f} on {usable_cpus()} cores; other "
          "processes may share them, so compare ratios within one run, not across runs.")


    print()
    print("Time split of ours, one thread (each stage run alone over every block of the 29 clips, "
          "median thread-CPU ms per clip):")
    print()
    print("| stage | ms / clip |")
    print("| --- | ---: |")
    print("\n".join(time_split(clips, repeats)))
    print()
    musicnn_section(clips, source, repeats)


def _max_relative_diff(ours, reference, range_db=80.0):
    """Largest ``|ours - reference| / reference`` over each clip's bands within ``range_db`` of its
    loudest, as a table cell."""
    loud = reference >= reference.max(axis=(1, 2), keepdims=True) * 10.0 ** (-range_db / 10.0)
    return f"{float((np.abs(ours - reference)[loud] / reference[loud]).max()):.2e}"


def musicnn_section(clips, source, repeats):
    """Print a Markdown section: musicnn's input from ours and from librosa, 30-s clips at 16 kHz.

    The clips are resampled to 16 kHz (librosa's default soxr_hq) once, outside the timings. Rows
    time `mel_power` at musicnn's settings against ``librosa.feature.melspectrogram`` with
    ``pad_mode="reflect"`` (librosa 0.6/0.7's default), then the whole input (`musicnn_input`)
    against librosa followed by musicnn's float16 cast and ``log10(10000 S + 1)`` in float32.
    """
    import librosa

    y16 = np.stack([librosa.resample(y, orig_sr=SR, target_sr=MUSICNN_SR) for y in clips])
    n, n_cores = len(y16), numba.config.NUMBA_NUM_THREADS
    settings = dict(sr=MUSICNN_SR, n_fft=MUSICNN_N_FFT, hop_length=MUSICNN_HOP,
                    n_mels=MUSICNN_N_MELS, pad_mode="reflect")

    def librosa_power():
        return np.stack([librosa.feature.melspectrogram(y=y, **settings) for y in y16])

    def librosa_input():  # musicnn's extractor.batch_data, with numpy 1.x's float32 arithmetic
        powers = librosa_power().astype(np.float16).astype(np.float32)
        return np.log10(np.float32(10000) * powers + 1).transpose(0, 2, 1)

    def ours(fn, threads, batch):
        numba.set_num_threads(threads)
        return fn(y16) if batch else np.stack([fn(y) for y in y16])

    power = functools.partial(mel_power, **settings)
    librosa_power_name = "librosa 0.11 melspectrogram, reflect (1 thread)"
    librosa_input_name = "librosa + musicnn's log (1 thread)"
    # name: (function, the librosa row it is compared with)
    methods = {librosa_power_name: (librosa_power, None)}
    for threads in (1, n_cores):
        for batch in (True, False):
            methods[f"ours mel_power, {threads} thread{'s' * (threads > 1)}, "
                    f"{'batch' if batch else 'clip by clip'}"] = (
                functools.partial(ours, power, threads, batch), librosa_power_name)
    methods[librosa_input_name] = (librosa_input, None)
    for threads in (1, n_cores):
        methods[f"ours musicnn_input, {threads} thread{'s' * (threads > 1)}, clip by clip"] = (
            functools.partial(ours, musicnn_input, threads, False), librosa_input_name)
    for fn, _ in methods.values():  # numba's compile or cache load, librosa's first-call set-up
        fn()
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    results = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeats):
            for name, (fn, _) in methods.items():
                results[name] = timed(fn, n, wall[name], cpu[name])
    numba.set_num_threads(n_cores)
    log_ms = []
    for _ in range(repeats):
        timed(lambda: [log_compress(S) for S in results["ours mel_power, 1 thread, batch"]], n,
              [], log_ms)

    print("## musicnn's input (features/mel.py: mel_power, musicnn_input)")
    print()
    print(f"{source}, resampled to 16 kHz (480000 samples); 96 mel bands x 1876 frames per clip; "
          f"{repeats} interleaved repeats.")
    print()
    print("| method | wall ms / clip | speed-up (wall) | CPU ms / clip | speed-up (CPU) "
          "| max diff vs librosa |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (_, reference) in methods.items():
        reference = reference or name
        if name == reference:
            error = "0"
        elif "mel_power" in name:
            error = f"{_max_relative_diff(results[name], results[reference])} (relative)"
        else:
            error = f"{float(np.abs(results[name] - results[reference]).max()):.2e}"
        row = [name, *_time_and_ratio(wall[name], wall[reference])]
        row += _time_and_ratio(cpu[name], cpu[reference]) if "1 thread" in name else ["", ""]
        print("| " + " | ".join(row) + f" | {error} |")
    print(f"| ours log_compress alone (numpy, 1 thread) | | | {np.median(log_ms):.2f} | | |")
    print()
    print("Notes:")
    print("- mel_power rows: speed-up over librosa's melspectrogram, and the largest relative "
          "difference over bands within 80 dB of their clip's loudest. musicnn_input rows: over "
          "librosa's melspectrogram followed by musicnn's float16 cast and log10(10000 S + 1) in "
          "float32, and the largest absolute difference (one float16 step: up to 4.2e-4).")


if __name__ == "__main__":
    main()
