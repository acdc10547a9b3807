"""Writes tests/data/mel_reference.npz: librosa 0.11's dB-mel spectrograms of deterministic signals.

Usage: .venv/bin/python tests/make_mel_reference.py

tests/test_mel.py compares features.mel against this file, so that check runs without librosa.
Every signal is 16-bit PCM (stored as int16, used as int16 / 32768 float32, like GTZAN's wav files)
and 2 s long unless its name says otherwise. For each case the file holds ``<case>/signal``,
``<case>/db`` (float32, what librosa returns), ``<case>/params`` (JSON keyword arguments of
``mel_db``) and ``<case>/sine`` (True where only bands within 60 dB of the maximum are compared:
a float32 FFT's rounding shows below that for a pure tone). Filterbanks are stored as
``filterbank/<i>/weights`` with ``filterbank/<i>/params``.
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data" / "mel_reference.npz"
SR = 22050
N = 2 * SR


def _pcm(x):
    """float signal in [-1, 1] -> int16 PCM (rounded, clipped to full scale)."""
    return np.clip(np.round(np.asarray(x) * 32768.0), -32768, 32767).astype(np.int16)


def _sine(frequency, amplitude=0.5):
    return _pcm(amplitude * np.sin(2.0 * np.pi * frequency * np.arange(N) / SR))


def cases():
    """{name: (int16 signal, mel_db keyword arguments, sine?)}."""
    rng = np.random.default_rng(20240601)
    noise = _pcm(0.1 * rng.standard_normal(N))
    impulse = np.zeros(N, dtype=np.int16)
    impulse[20000] = 32767
    # 441 Hz = 50 samples per period: 25 at +full scale, 25 at -full scale.
    square = _pcm(np.where(np.arange(N) // 25 % 2 == 0, 1.0, -1.0))
    bin_hz = SR / 2048  # FFT bin spacing at n_fft=2048
    noise_then_silence = noise.copy()
    noise_then_silence[N // 2:] = 0
    mixed = dict(n_fft=1000, hop_length=250, n_mels=64, fmin=40.0, fmax=8000.0, ref=0.25,
                 amin=1e-8, top_db=60.0)
    return {
        "white_noise": (noise, {}, False),
        "impulse": (impulse, {}, False),
        "square_441hz_full_scale": (square, {}, False),
        "silence": (np.zeros(N, dtype=np.int16), {}, False),
        "short_1000_samples": (noise[:1000], {}, False),
        "one_sample": (_pcm([0.5]), {}, False),
        "sine_bin_10_centre": (_sine(10 * bin_hz), {}, True),
        "sine_bin_10_edge": (_sine(10.5 * bin_hz), {}, True),
        "sine_bin_1000_centre": (_sine(1000 * bin_hz), {}, True),
        "sine_bin_1020_edge": (_sine(1020.5 * bin_hz), {}, True),
        "noise_then_silence_no_floor": (noise_then_silence, {"top_db": None}, False),
        "noise_then_silence_floor": (noise_then_silence, {}, False),
        "noise_other_params": (noise, mixed, False),
        "noise_16khz_40_bands": (noise, dict(sr=16000, n_fft=512, hop_length=128, n_mels=40), False),
        "noise_odd_n_fft": (noise, dict(n_fft=1001, hop_length=300), False),
        # 256 bands on 257 bins: some low triangles fall between two bins and stay empty.
        "noise_256_bands_some_empty": (noise, dict(n_fft=512, hop_length=128, n_mels=256), False),
    }


FILTERBANKS = [
    {},
    dict(sr=16000, n_fft=512, n_mels=40, fmin=50.0, fmax=7000.0),
    dict(sr=44100, n_fft=4096, n_mels=96, fmin=20.0, fmax=16000.0),
]


def _librosa_db(librosa, y, sr=SR, n_fft=2048, hop_length=512, n_mels=128, fmin=0.0, fmax=None,
                ref=1.0, amin=1e-10, top_db=80.0):
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length,
                                         n_mels=n_mels, fmin=fmin, fmax=fmax)
    return librosa.power_to_db(mel, ref=ref, amin=amin, top_db=top_db)


def main():
    import librosa

    arrays = {"librosa_version": np.array(librosa.__version__)}
    for name, (signal, params, sine) in cases().items():
        y = signal.astype(np.float32) / np.float32(32768)
        arrays[f"{name}/signal"] = signal
        arrays[f"{name}/db"] = _librosa_db(librosa, y, **params).astype(np.float32)
        arrays[f"{name}/params"] = np.array(json.dumps(params))
        arrays[f"{name}/sine"] = np.array(sine)
    for i, params in enumerate(FILTERBANKS):
        arrays[f"filterbank/{i}/weights"] = librosa.filters.mel(**{"sr": SR, "n_fft": 2048,
                                                                    **params})
        arrays[f"filterbank/{i}/params"] = np.array(json.dumps(params))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, OUT)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, librosa {librosa.__version__})")


if __name__ == "__main__":
    main()
