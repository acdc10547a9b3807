"""features/backbone.py and the embedding array of the cache: patch counts, the cut, and that a
backbone's features are built, checked and rebuilt like any cached array (with a stand-in network)."""
import json

import numpy as np
import pytest

from features import backbone, synth
from features.cache import CacheError, ensure_features, open_cache, verify_cache


def fake_embedder(identity="fake-1", calls=None):
    """A stand-in network: per patch, the mean of each of 4 band groups and the patch's position in time."""
    def embed(p):
        if calls is not None:
            calls.append(len(p))
        return np.concatenate([p.reshape(len(p), 187, 4, 24).mean(axis=(1, 3)),
                               p[:, :, 0].mean(1, keepdims=True)], axis=1).astype(np.float32)

    return backbone.Embedder(backbone.NAME, identity, 5, embed)


def test_patch_counts():
    assert backbone.resampled_length(661500, 22050) == 480000
    assert backbone.n_patches(661500, 22050) == 10  # 1876 frames: 10 whole patches
    assert backbone.n_patches(16000 * 3, 16000) == 1  # 188 frames
    assert backbone.n_patches(16000 * 6, 16000) == 2  # 376 frames: 2 x 187 = 374
    assert backbone.n_patches(22050, 22050) == 1  # under one patch: tiled to one
    np.testing.assert_array_equal(backbone.n_patches(np.array([661500, 44100]), 22050), [10, 1])


@pytest.mark.parametrize("seconds", [0.5, 2.0, 3.0, 7.1, 30.0])
def test_patches_cut_consecutive_and_tile_short_clips(seconds):
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(int(22050 * seconds))).astype(np.float32)
    p = backbone.patches(y, 22050)
    assert p.shape == (backbone.n_patches(len(y), 22050), backbone.PATCH_FRAMES, 96) and p.dtype == np.float32
    from features import mel
    from scipy.signal import resample_poly

    S = mel.musicnn_input(resample_poly(y, 320, 441).astype(np.float32))
    if len(S) >= backbone.PATCH_FRAMES:  # consecutive, not overlapping, from frame 0
        np.testing.assert_array_equal(p.reshape(-1, 96), S[:len(p) * backbone.PATCH_FRAMES])
    else:  # the frames repeated cyclically
        np.testing.assert_array_equal(p[0, len(S):2 * len(S)], S[:min(len(S), backbone.PATCH_FRAMES - len(S))])
        np.testing.assert_array_equal(p[0, :len(S)], S)


def test_patches_at_16k_need_no_resampling():
    y = np.sin(np.arange(16000 * 4) / 7.0).astype(np.float32) * 0.3
    from features import mel

    np.testing.assert_array_equal(backbone.patches(y, 16000)[0], mel.musicnn_input(y)[:187])


@pytest.fixture()
def data(tmp_path):
    return synth.write_dataset(tmp_path / "synthetic", n_per_class=1, duration=4.0)


def test_embedding_array_is_built_checked_and_rebuilt(tmp_path, data):
    arrays = ("labels", "lengths", backbone.NAME)
    calls = []
    lines = []
    c = ensure_features(data, tmp_path / "cache", arrays=arrays, embedder=fake_embedder(calls=calls),
                        progress=False, log=lines.append)
    cache = open_cache(c)
    x = cache.array(backbone.NAME)
    assert x.shape == (10, 10, 5) and x.dtype == np.float32  # 30-s windows hold 10 patches
    counts = backbone.n_patches(cache.array("lengths"), 22050)
    assert (counts == 1).all()  # 4-s clips: 250 frames at 16 kHz, one whole patch
    assert np.abs(x[:, 1:]).max() == 0 and np.abs(x[:, 0]).min() > 0  # zero beyond each clip's patches
    assert sum(calls) == 10
    assert cache.manifest["arrays"][backbone.NAME]["network"] == "fake-1"
    assert verify_cache(c) == []

    calls.clear()
    ensure_features(data, tmp_path / "cache", arrays=arrays, embedder=fake_embedder(calls=calls),
                    progress=False, log=lines.append)
    assert calls == [] and lines[-1].endswith("current, nothing rebuilt")

    before = {n: open_cache(c).fingerprint(n) for n in ("labels", "lengths")}
    ensure_features(data, tmp_path / "cache", arrays=arrays, embedder=fake_embedder("fake-2", calls),
                    progress=False, log=lines.append)
    assert lines[-1].endswith(f"built {backbone.NAME}") and sum(calls) == 10  # new weights: only the embedding
    assert {n: open_cache(c).fingerprint(n) for n in before} == before


def test_damaged_embedding_is_rebuilt_alone(tmp_path, data, capsys):
    arrays = ("labels", "lengths", backbone.NAME)
    c = ensure_features(data, tmp_path / "cache", arrays=arrays, embedder=fake_embedder(), progress=False)
    good = np.load(c / f"{backbone.NAME}.npy").copy()
    raw = bytearray((c / f"{backbone.NAME}.npy").read_bytes())
    raw[-3] ^= 0xFF
    (c / f"{backbone.NAME}.npy").write_bytes(bytes(raw))
    assert any("damaged" in p for p in verify_cache(c))
    lines = []
    ensure_features(data, tmp_path / "cache", arrays=arrays, embedder=fake_embedder(), progress=False,
                    log=lines.append)
    assert "damaged" in capsys.readouterr().err and lines[-1].endswith(f"built {backbone.NAME}")
    np.testing.assert_array_equal(np.load(c / f"{backbone.NAME}.npy"), good)


def test_embedding_needs_its_network(tmp_path, data):
    with pytest.raises(CacheError, match=f"unknown cache array '{backbone.NAME}'"):
        ensure_features(data, tmp_path / "cache", arrays=("labels", backbone.NAME), progress=False)


def test_other_arrays_keep_their_fingerprints(tmp_path, data):
    """Adding the embedding to a cache leaves every other array's fingerprint and bytes alone."""
    c = ensure_features(data, tmp_path / "cache", arrays=("labels", "lengths", "mel_db"), progress=False)
    before = json.loads((c / "manifest.json").read_text())["arrays"]
    ensure_features(data, tmp_path / "cache", arrays=("labels", "lengths", "mel_db", backbone.NAME),
                    embedder=fake_embedder(), progress=False)
    after = json.loads((c / "manifest.json").read_text())["arrays"]
    assert {n: after[n] for n in before} == before
