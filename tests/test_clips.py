"""features/clips.py: one clip turned into model inputs by the same code whether cached or classified;
and the feature record a run keeps (features.cache.feature_record, record_problem)."""
import dataclasses

import numpy as np
import pytest

from features import audio, backbone, cache, dataset, synth
from features.clips import Clip, FeatureConfig, Windows, config_from_record

VIEW = "img360x120"


def fake_embedder(identity="fake-1"):
    """A stand-in network: per patch, the mean and the maximum of its values."""
    def embed(p):
        return np.stack([p.mean(axis=(1, 2)), p.max(axis=(1, 2))], axis=1).astype(np.float32)

    return backbone.Embedder(backbone.NAME, identity, 2, embed)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(data root, opened cache) of ten 3-s synthetic clips, with a view and the embedding."""
    tmp = tmp_path_factory.mktemp("clips")
    data = synth.write_dataset(tmp / "synthetic", n_per_class=1, duration=3.0)
    arrays = ("labels", "lengths", "wave", "mel_db", VIEW, backbone.NAME)
    cache_dir = cache.ensure_features(data, tmp / "cache", arrays=arrays, jobs=1, progress=False,
                                      embedder=fake_embedder())
    return data, cache.open_cache(cache_dir)


def test_a_clip_read_as_predict_reads_it_equals_its_cached_row(built):
    data, c = built
    config = FeatureConfig()
    row = 3
    path = {t.relpath: t.path for t in dataset.list_tracks(data)}[c.files[row]]
    (y, valid), = Windows(audio.stream(path, config.sr), config.n_samples, config.sr, align_end=False)
    assert valid == c.array("lengths")[row]
    np.testing.assert_array_equal(y, c.array("wave")[row] * np.float32(2.0 ** -15))
    clip = Clip(y, valid, config)
    np.testing.assert_array_equal(clip.mel_db, c.array("mel_db")[row])
    np.testing.assert_array_equal(clip.view(VIEW), c.array(VIEW)[row])
    assert clip.view("mel_db") is clip.mel_db and clip.view("wave") is y
    embedded = clip.embedding(fake_embedder())
    np.testing.assert_array_equal(embedded, c.array(backbone.NAME)[row, :len(embedded)])
    assert not c.array(backbone.NAME)[row, len(embedded):].any()  # zero beyond the clip's patches
    assert clip.n_frames == 1 + valid // config.hop_length < clip.mel_db.shape[1]  # the padding not counted


def test_windows_cut_pad_and_align_the_last_one():
    chunks = [np.arange(7, dtype=np.float32), np.arange(7, 13, dtype=np.float32)]  # 13 samples
    padded = list(Windows(iter(chunks), 5, 2, align_end=False))
    assert [v for _, v in padded] == [5, 5, 3]
    np.testing.assert_array_equal(padded[2][0], [10, 11, 12, 0, 0])
    aligned = Windows(iter(chunks), 5, 2, align_end=True)
    last = [w.copy() for w, _ in aligned][-1]
    np.testing.assert_array_equal(last, [8, 9, 10, 11, 12])
    assert aligned.samples == 13
    assert [v for _, v in Windows(iter(chunks), 5, 4, align_end=False)] == [5, 5]  # a rest of 3 is dropped


def test_feature_record_round_trip(built):
    _, c = built
    record = cache.feature_record(VIEW, c.manifest)
    assert list(record) == [f.name for f in dataclasses.fields(FeatureConfig)] + ["view", "wave_scale",
                                                                                  "fingerprint"]
    assert record["view"] == VIEW and record["wave_scale"] == 2.0 ** -15
    assert config_from_record(record) == FeatureConfig()
    assert record["fingerprint"] == cache.code_fingerprint(VIEW, FeatureConfig())
    assert cache.record_problem(record, None) is None


def test_record_problem_says_what_differs(built):
    _, c = built
    record = cache.feature_record(VIEW, c.manifest)
    now = cache.code_fingerprint(VIEW, FeatureConfig(top_db=60.0))
    assert cache.record_problem({**record, "top_db": 60.0}, None) == (
        f"trained on features this code no longer computes (fingerprint {record['fingerprint']}, now {now})")
    with pytest.raises(TypeError):
        config_from_record({**record, "window": "hann"})
    assert cache.record_problem({**record, "window": "hann"}, None) == (
        f"trained on features this code no longer computes (fingerprint {record['fingerprint']}, now None)")


def test_record_of_an_embedding_holds_its_network(built):
    _, c = built
    record = cache.feature_record(backbone.NAME, c.manifest)
    assert record["network"] == "fake-1" and list(record)[-1] == "network"
    assert cache.record_problem(record, "fake-1") is None
    assert cache.record_problem(record, "fake-2") == (
        f"trained on features this code no longer computes (fingerprint {record['fingerprint']}, "
        f"now {cache.code_fingerprint(backbone.NAME, FeatureConfig(), 'fake-2')})")
