"""features.mel against librosa 0.11: committed reference values, then live on the real GTZAN clips."""
import json
from pathlib import Path

import numba
import numpy as np
import pytest
import soundfile as sf

from features.mel import (hz_to_mel, mel_db, mel_filterbank, mel_frequencies, mel_to_hz,
                          n_frames)

REFERENCE = Path(__file__).resolve().parent / "data" / "mel_reference.npz"
TOLERANCE_DB = 1e-3
SINE_RANGE_DB = 60.0  # pure tones are compared in bands within this of the clip's maximum
CLIP_SAMPLES = 661500


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


def _cases(reference):
    names = sorted({key.split("/")[0] for key in reference if key.endswith("/db")})
    assert len(names) >= 16
    return names


def test_reference_cases(reference):
    for name in _cases(reference):
        y = reference[f"{name}/signal"].astype(np.float32) / np.float32(32768)
        expected = reference[f"{name}/db"]
        got = mel_db(y, **json.loads(str(reference[f"{name}/params"])))
        assert got.dtype == np.float32 and got.shape == expected.shape, name
        compared = expected >= expected.max() - SINE_RANGE_DB if reference[f"{name}/sine"] \
            else np.ones(expected.shape, dtype=bool)
        error = np.abs(got - expected)[compared].max()
        assert error <= TOLERANCE_DB, f"{name}: max |diff| {error:.2e} dB"


def test_filterbank_matches_librosa(reference):
    indices = sorted({key.split("/")[1] for key in reference if key.startswith("filterbank/")})
    assert len(indices) == 3
    for i in indices:
        params = {"sr": 22050, **json.loads(str(reference[f"filterbank/{i}/params"]))}
        expected = reference[f"filterbank/{i}/weights"]
        got = mel_filterbank(**params)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_filterbank_has_at_most_two_bands_per_bin():
    weights = mel_filterbank()
    assert weights.shape == (128, 1025)
    assert (np.count_nonzero(weights, axis=0) <= 2).all()
    assert (np.count_nonzero(weights, axis=1) >= 1).all()


def test_slaney_mel_scale():
    # Linear below 1 kHz (200/3 Hz per mel), 27 mels per factor 6.4 above.
    np.testing.assert_allclose(hz_to_mel([0.0, 200.0 / 3.0, 1000.0, 6400.0]),
                               [0.0, 1.0, 15.0, 42.0], rtol=1e-12)
    hz = np.linspace(0.0, 11025.0, 101)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)
    edges = mel_frequencies(130, 0.0, 11025.0)
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(11025.0)
    assert (np.diff(hz_to_mel(edges)) > 0).all()


def test_30_second_clip_shape_and_batch():
    rng = np.random.default_rng(1)
    clips = rng.standard_normal((2, CLIP_SAMPLES)).astype(np.float32)
    clips[1] *= 0.03  # 30 dB quieter: its floor must come from its own maximum, not the batch's
    clips[1, : CLIP_SAMPLES // 2] = 0.0  # -100 dB before flooring
    assert n_frames(CLIP_SAMPLES) == 1292
    one = mel_db(clips[1])
    assert one.shape == (128, 1292) and one.dtype == np.float32
    batch = mel_db(clips)
    assert batch.shape == (2, 128, 1292) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], mel_db(clips[0]))
    np.testing.assert_array_equal(batch[1], one)
    # Per-clip top_db: the quiet clip's silent half sits 80 dB below its own maximum.
    assert one.min() == pytest.approx(one.max() - 80.0, abs=1e-4)
    assert one.min() < batch[0].max() - 80.0 - 20.0


def test_float64_input_and_threads_give_identical_results():
    rng = np.random.default_rng(2)
    y = (0.2 * rng.standard_normal(100_000)).astype(np.float32)
    expected = mel_db(y)
    np.testing.assert_array_equal(mel_db(y.astype(np.float64)), expected)
    np.testing.assert_array_equal(mel_db(y[::-1][::-1]), expected)  # non-contiguous view
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(mel_db(y), expected)
        np.testing.assert_array_equal(mel_db(np.stack([y, y]))[1], expected)
    finally:
        numba.set_num_threads(threads)


def test_top_db_none_keeps_everything():
    y = np.zeros(10_000, dtype=np.float32)
    y[5000] = 1.0
    floored = mel_db(y)
    unfloored = mel_db(y, top_db=None)
    assert unfloored.min() == pytest.approx(-100.0, abs=1e-4)  # silent frames: 10 log10(amin)
    assert floored.min() == pytest.approx(floored.max() - 80.0, abs=1e-4)


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros(0, dtype=np.float32), ValueError, "empty"),
    (np.zeros((3, 0), dtype=np.float32), ValueError, "empty"),
    (np.zeros((2, 2, 100), dtype=np.float32), ValueError, "shape"),
    (np.zeros(100, dtype=np.int16), TypeError, "float32 or float64"),
    (np.array([0.0, np.nan, 0.0], dtype=np.float32), ValueError, "NaN or infinite"),
    (np.array([0.0, np.inf], dtype=np.float64), ValueError, "NaN or infinite"),
    (np.array([0.0, -1e13], dtype=np.float64), ValueError, "overflow"),
])
def test_bad_input_raises_one_line_error(bad, error, message):
    with pytest.raises(error, match=message) as info:
        mel_db(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("params, message", [
    (dict(sr=0), "sr"), (dict(n_fft=1), "n_fft"), (dict(hop_length=0), "hop_length"),
    (dict(n_mels=0), "n_mels"), (dict(fmin=5000.0, fmax=4000.0), "fmin"),
    (dict(amin=0.0), "amin"), (dict(top_db=-1.0), "top_db"),
])
def test_bad_parameters_raise(params, message):
    with pytest.raises(ValueError, match=message):
        mel_db(np.zeros(4096, dtype=np.float32), **params)


def _real_clips(shared_data):
    """[(name, float32 audio)] for every wav under gtzan_sample (cut/padded to 661500), gtzan_15s
    and gtzan_2s, read as int16 / 32768."""
    clips = []
    for folder in ("gtzan_sample", "gtzan_15s", "gtzan_2s"):
        for path in sorted((shared_data / folder).glob("*/*.wav")):
            pcm, sr = sf.read(path, dtype="int16")
            assert sr == 22050 and pcm.ndim == 1, path
            y = pcm.astype(np.float32) / np.float32(32768)
            if folder == "gtzan_sample":
                y = np.pad(y, (0, max(0, CLIP_SAMPLES - len(y))))[:CLIP_SAMPLES]
            clips.append((f"{folder}/{path.parent.name}/{path.name}", y))
    return clips


def test_real_clips_match_live_librosa(shared_data):
    librosa = pytest.importorskip("librosa")
    clips = _real_clips(shared_data)
    assert len(clips) == 29 + 80 + 299
    full = np.stack([y for name, y in clips if name.startswith("gtzan_sample/")])
    ours_full = iter(mel_db(full))  # the batch path on the 30-s clips, one call per clip below
    worst = (0.0, "")
    for name, y in clips:
        ours = next(ours_full) if name.startswith("gtzan_sample/") else mel_db(y)
        expected = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=22050))
        error = float(np.abs(ours - expected).max())
        worst = max(worst, (error, name))
    assert worst[0] <= TOLERANCE_DB, f"max |diff| {worst[0]:.2e} dB in {worst[1]}"
