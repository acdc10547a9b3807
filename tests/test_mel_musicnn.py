"""features.mel's power mel, reflect padding and musicnn's input, against librosa 0.11 and numpy.

musicnn (Pons & Serra 2019) feeds its taggers ``np.log10(10000 * S.astype(np.float16) + 1)`` of
``librosa.feature.melspectrogram(y, sr=16000, hop_length=256, n_fft=512, n_mels=96)`` as librosa
0.6/0.7 computed it, with reflect padding (their default; librosa 0.11's is zeros, so the references
here pass ``pad_mode="reflect"``).
"""
import warnings

import numba
import numpy as np
import pytest
import soundfile as sf

from features.mel import (MUSICNN_HOP, MUSICNN_N_FFT, MUSICNN_N_MELS, MUSICNN_SR, log_compress,
                          mel_db, mel_filterbank, mel_power, musicnn_input, n_frames)

MUSICNN = dict(sr=MUSICNN_SR, n_fft=MUSICNN_N_FFT, hop_length=MUSICNN_HOP, n_mels=MUSICNN_N_MELS)
DEFAULTS = dict(sr=22050, n_fft=2048, hop_length=512, n_mels=128)
# Our FFT is float32, librosa's float64: measured at most 6e-4 relative on bands within 80 dB of
# their clip's loudest (408 GTZAN clips at 16 kHz), 2.6e-4 on a pure tone; quieter bands carry
# errors of about 1e-7 of their frame's energy, far below the absolute term.
RTOL, ATOL_OF_MAX = 1e-3, 1e-10
TOLERANCE_DB = 1e-3
# One float16 step of 10000 S (relative 2**-10 at most), in log10, plus float32 rounding.
LOG_STEP = np.log10(1.0 + 2.0 ** -10) + 1e-6


TONES = ("sine_440hz", "chirp_to_7khz")


def _librosa():
    return pytest.importorskip("librosa")


def _assert_power_close(ours, expected):
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL_OF_MAX * expected.max())


def _signals():
    """{name: float32 signal}: 2 s at 16 kHz unless the name says otherwise."""
    rng = np.random.default_rng(20190601)
    t = np.arange(32000) / 16000.0
    impulse = np.zeros(32000, dtype=np.float32)
    impulse[3] = 1.0  # within the first frame's reflection
    return {
        "noise": (0.1 * rng.standard_normal(32000)).astype(np.float32),
        "sine_440hz": (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
        "chirp_to_7khz": (0.3 * np.sin(2 * np.pi * (50.0 + 1737.5 * t) * t)).astype(np.float32),
        "impulse_at_start": impulse,
        "ramp": np.linspace(-0.5, 0.9, 32000, dtype=np.float32),  # reflect and zeros differ most
    }


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("settings", [MUSICNN, DEFAULTS], ids=["musicnn", "defaults"])
@pytest.mark.parametrize("name", list(_signals()))
def test_mel_power_matches_librosa(name, settings, pad_mode):
    librosa = _librosa()
    y = _signals()[name]
    expected = librosa.feature.melspectrogram(y=y, pad_mode=pad_mode, **settings)
    _assert_power_close(mel_power(y, pad_mode=pad_mode, **settings), expected)


def _numpy_mel_power(y, sr, n_fft, hop_length, n_mels):
    """Reflect-padded power mel by numpy's own np.pad, float64 FFT: the reference for clips too
    short for one reflection."""
    padded = np.pad(y.astype(np.float64), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (mel_filterbank(sr, n_fft, n_mels).astype(np.float64) @ power.T).astype(np.float32)


@pytest.mark.parametrize("n_samples", [1, 2, 3, 100, 256, 257, 511, 600])
@pytest.mark.parametrize("settings", [MUSICNN, DEFAULTS], ids=["musicnn", "defaults"])
def test_short_clips_reflect_as_np_pad_does(n_samples, settings):
    # Shorter than n_fft // 2 + 1, a clip is reflected again and again (np.pad's behaviour).
    y = (0.1 * np.random.default_rng(n_samples).standard_normal(n_samples)).astype(np.float32)
    ours = mel_power(y, pad_mode="reflect", **settings)
    assert ours.shape == (settings["n_mels"], n_frames(n_samples, settings["n_fft"],
                                                       settings["hop_length"]))
    _assert_power_close(ours, _numpy_mel_power(y, **settings))
    librosa = _librosa()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns that n_fft exceeds the clip
        expected = librosa.feature.melspectrogram(y=y, pad_mode="reflect", **settings)
    _assert_power_close(ours, expected)


def test_one_sample_clip_repeats_its_sample():
    ours = mel_power(np.array([0.5], dtype=np.float32), pad_mode="reflect", **MUSICNN)
    constant = mel_power(np.full(MUSICNN_N_FFT, 0.5, dtype=np.float32), **MUSICNN)[:, 1:2]
    np.testing.assert_allclose(ours, constant, rtol=1e-6)


def test_interior_frames_do_not_depend_on_pad_mode():
    y = _signals()["noise"]
    starts = np.arange(n_frames(len(y), MUSICNN_N_FFT, MUSICNN_HOP)) * MUSICNN_HOP \
        - MUSICNN_N_FFT // 2
    inside = (starts >= 0) & (starts + MUSICNN_N_FFT <= len(y))
    zeros = mel_db(y, top_db=None, **MUSICNN)
    reflected = mel_db(y, top_db=None, pad_mode="reflect", **MUSICNN)
    np.testing.assert_array_equal(reflected[:, inside], zeros[:, inside])
    assert (reflected[:, ~inside] != zeros[:, ~inside]).any(axis=0).all()
    np.testing.assert_array_equal(mel_db(y, pad_mode="constant"), mel_db(y))


def test_mel_db_is_mel_power_in_db():
    y = _signals()["chirp_to_7khz"]
    for pad_mode in ("constant", "reflect"):
        power = mel_power(y, pad_mode=pad_mode, **MUSICNN).astype(np.float64)
        expected = 10.0 * np.log10(np.maximum(1e-10, power))
        np.testing.assert_allclose(mel_db(y, top_db=None, pad_mode=pad_mode, **MUSICNN), expected,
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("settings", [MUSICNN, DEFAULTS], ids=["musicnn", "defaults"])
def test_mel_db_reflect_matches_librosa(settings):
    librosa = _librosa()
    for name, y in _signals().items():
        expected = librosa.power_to_db(librosa.feature.melspectrogram(y=y, pad_mode="reflect",
                                                                      **settings))
        ours = mel_db(y, pad_mode="reflect", **settings)
        # a tone's float32 FFT rounding shows from about 55 dB below its peak on (1.4e-3 dB for
        # the chirp's last frame at -56 dB)
        compared = expected >= expected.max() - 50.0 if name in TONES \
            else np.ones(expected.shape, dtype=bool)
        error = np.abs(ours - expected)[compared].max()
        assert error <= TOLERANCE_DB, f"{name}: max |diff| {error:.2e} dB"


def test_batch_threads_and_float64_give_identical_power():
    y = _signals()["noise"]
    expected = mel_power(y, pad_mode="reflect", **MUSICNN)
    batch = mel_power(np.stack([y[::-1], y]), pad_mode="reflect", **MUSICNN)
    assert batch.shape == (2, *expected.shape)
    np.testing.assert_array_equal(batch[1], expected)
    np.testing.assert_array_equal(mel_power(y.astype(np.float64), pad_mode="reflect", **MUSICNN),
                                  expected)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(mel_power(y, pad_mode="reflect", **MUSICNN), expected)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("call, message", [
    (lambda: mel_power(np.zeros(0, dtype=np.float32)), "mel_power: y is empty"),
    (lambda: mel_power(np.zeros(10, dtype=np.int16)), "mel_power: y must be float32"),
    (lambda: mel_power(np.array([0.0, np.nan], dtype=np.float32)), "mel_power: y contains NaN"),
    (lambda: mel_power(np.zeros(100, dtype=np.float32), hop_length=0), "hop_length"),
    (lambda: mel_power(np.zeros(100, dtype=np.float32), pad_mode="edge"), "pad_mode"),
    (lambda: mel_db(np.zeros(100, dtype=np.float32), pad_mode="wrap"), "mel_db: pad_mode"),
    (lambda: musicnn_input(np.zeros(100, dtype=np.float32), sr=22050), "16000"),
])
def test_bad_arguments_raise_one_line_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_log_compress_is_numpy_1x_musicnn():
    # np.log10(10000 * S.astype(np.float16) + 1) under numpy 1.26.4 (value-based casting promoted
    # float16 times the int 10000 to float32); numpy >= 2 gives inf from S = 6.55 on.
    S = np.array([0, 1e-7, 3e-5, 1e-4, 0.01, 0.5, 1, 6.5, 6.56, 7, 100, 3000, 65504, 65519],
                 dtype=np.float32)
    numpy_1x = np.array([0.0, 0.000517411, 0.11388034, 0.30106604, 2.0044134, 3.6990569, 4.000044,
                         4.81292, 4.8168178, 4.8451047, 6.000001, 7.4771214, 8.816268, 8.816268],
                        dtype=np.float32)
    np.testing.assert_array_equal(log_compress(S), numpy_1x)


def test_log_compress_keeps_shape_and_follows_the_formula():
    S = (np.random.default_rng(3).random((2, 96, 50)) ** 6 * 300).astype(np.float32)
    got = log_compress(S)
    assert got.dtype == np.float32 and got.shape == S.shape
    expected = np.log10(np.float32(10000) * S.astype(np.float16).astype(np.float32) + np.float32(1))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(log_compress(S.astype(np.float64)), expected)


@pytest.mark.parametrize("bad", [65520.0, np.inf, np.nan, -1.0])
def test_log_compress_rejects_what_float16_cannot_hold(bad):
    S = np.array([[0.5, bad]], dtype=np.float32)
    with pytest.raises(ValueError, match="float16") as info:
        log_compress(S)
    assert "\n" not in str(info.value)


def _librosa_musicnn_input(librosa, y):
    """musicnn's extractor.batch_data before batching, with numpy 1.x's float32 arithmetic."""
    S = librosa.feature.melspectrogram(y=y, pad_mode="reflect", **MUSICNN).T
    return np.log10(np.float32(10000) * S.astype(np.float16).astype(np.float32) + 1)


def _assert_input_close(ours, expected):
    assert ours.shape == expected.shape
    difference = np.abs(ours - expected)
    assert difference.max() <= LOG_STEP, f"max |diff| {difference.max():.2e}"
    assert np.mean(difference > 0) < 0.005  # only where the powers round to neighbouring float16


def test_musicnn_input_shape_and_values():
    assert (MUSICNN_SR, MUSICNN_N_FFT, MUSICNN_HOP, MUSICNN_N_MELS) == (16000, 512, 256, 96)
    y = (0.1 * np.random.default_rng(4).standard_normal(480000)).astype(np.float32)
    got = musicnn_input(y)
    assert got.shape == (1876, 96) and got.dtype == np.float32 and got.flags.c_contiguous
    power = mel_power(y, 16000, 512, 256, 96, pad_mode="reflect")
    np.testing.assert_array_equal(got, log_compress(power).T)
    batch = musicnn_input(np.stack([y[:32000], y[1:32001]]))
    assert batch.shape == (2, 126, 96)
    np.testing.assert_array_equal(batch[0], musicnn_input(y[:32000]))
    librosa = _librosa()
    for name, signal in _signals().items():
        _assert_input_close(musicnn_input(signal), _librosa_musicnn_input(librosa, signal))


def test_real_clip_at_16khz_matches_librosa(shared_data):
    librosa = _librosa()
    path = shared_data / "gtzan_sample" / "pop" / "pop.00001.wav"  # the loudest sample clip
    pcm, sr = sf.read(path, dtype="int16")
    y = librosa.resample(pcm.astype(np.float32) / np.float32(32768), orig_sr=sr,
                         target_sr=MUSICNN_SR)
    _assert_power_close(mel_power(y, pad_mode="reflect", **MUSICNN),
                        librosa.feature.melspectrogram(y=y, pad_mode="reflect", **MUSICNN))
    expected_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, pad_mode="reflect",
                                                                     **MUSICNN))
    assert np.abs(mel_db(y, pad_mode="reflect", **MUSICNN) - expected_db).max() <= TOLERANCE_DB
    _assert_input_close(musicnn_input(y), _librosa_musicnn_input(librosa, y))
