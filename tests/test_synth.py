"""features.synth: deterministic, well-formed, classes that differ, and a dataset the pipeline reads."""
import numpy as np
import pytest

from features import audio, synth
from features.dataset import GENRES, find_data, list_tracks

SR = 22050


def test_shape_dtype_range():
    for label in range(10):
        y = synth.generate(label, 0, duration=2.0)
        assert y.dtype == np.float32 and y.shape == (2 * SR,)
        assert 0.5 <= np.abs(y).max() <= 0.95 and np.isfinite(y).all()
    assert synth.generate(3, 0).shape == (661_500,)
    assert synth.generate(3, 0, sr=16000, duration=1.5).shape == (24_000,)
    with pytest.raises(ValueError, match="label must be 0..9"):
        synth.generate(10, 0)


def test_deterministic_and_varied():
    a = synth.generate(4, 7, duration=3.0, seed=1)
    assert np.array_equal(a, synth.generate(4, 7, duration=3.0, seed=1))
    assert not np.array_equal(a, synth.generate(4, 8, duration=3.0, seed=1))
    assert not np.array_equal(a, synth.generate(4, 7, duration=3.0, seed=2))


def _features(y):
    """log spectral centroid, log low-band (<200 Hz) energy share, onset rate (1/s)."""
    n_fft, hop = 1024, 512
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop] * np.hanning(n_fft)
    S = np.abs(np.fft.rfft(frames, axis=1))
    f = np.fft.rfftfreq(n_fft, 1 / SR)
    centroid = (S * f).sum(1) / (S.sum(1) + 1e-9)
    flux = np.maximum(np.diff(np.log1p(10 * S), axis=0), 0).sum(1)
    mid = flux[1:-1]
    peak = (mid > flux.mean() + flux.std()) & (mid >= flux[:-2]) & (mid > flux[2:])
    low_share = S[:, f < 200].sum() / S.sum()
    return [np.log(centroid.mean()), np.log(low_share), peak.sum() * SR / len(y)]


def test_classes_differ_by_simple_features():
    labels = np.repeat(np.arange(10), 3)
    index = np.tile(np.arange(3), 10)
    X = np.array([_features(synth.generate(c, i, duration=6.0)) for c, i in zip(labels, index)])
    Z = (X - X.mean(0)) / X.std(0)
    hits = 0
    for k in range(len(Z)):  # leave-one-out nearest class mean
        rest = np.arange(len(Z)) != k
        means = np.array([Z[rest & (labels == c)].mean(0) for c in range(10)])
        hits += np.argmin(((means - Z[k]) ** 2).sum(1)) == labels[k]
    assert hits / len(Z) >= 0.6  # chance is 0.1; three crude features already separate most
    assert (X[labels == 0].std(0) > 0).any()  # clips within a class differ in their features


def test_write_dataset_feeds_the_same_pipeline(tmp_path):
    out = synth.write_dataset(tmp_path / "synth", n_per_class=2, duration=1.0, seed=3)
    root = find_data(out)
    tracks = list_tracks(root)
    assert root == out
    assert [t.relpath for t in tracks[:2]] == ["blues/blues.00000.wav", "blues/blues.00001.wav"]
    assert [t.label for t in tracks] == list(np.repeat(np.arange(10), 2))
    assert {t.genre for t in tracks} == set(GENRES)
    t = tracks[5]
    assert audio.info(t.path)[:3] == (SR, 1, SR) and audio.info(t.path).subtype == "PCM_16"
    y = audio.load(t.path, duration=None)
    assert np.abs(y - synth.generate(t.label, 1, duration=1.0, seed=3)).max() < 2 / 32768

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*.wav")}
    synth.write_dataset(out, n_per_class=2, duration=1.0, seed=3)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*.wav")} == before
    assert sorted(p.name for p in (out / "rock").iterdir()) == ["rock.00000.wav", "rock.00001.wav"]

    (out / "pop" / "pop.00000.wav").write_bytes(b"damaged")
    synth.write_dataset(out, n_per_class=2, duration=1.0, seed=3)
    assert (out / "pop" / "pop.00000.wav").read_bytes() == before[out / "pop" / "pop.00000.wav"][0]
