"""What the cache rebuilds, and which runs retrain, for each kind of change; clips of any length."""
import shutil

import numpy as np
import pytest
import soundfile as sf

from features import audio, cache, dataset, images, synth
from models import train
from models.hparams import Hparams

# the arrays each kind of model reads: a run retrains exactly when one of these fingerprints moves
READS = {"cnn1d_raw": ("labels", "wave"), "cnn2d": ("labels", "img400"), "svm": ("labels", "img360x120"),
         "mel model": ("labels", "mel_db", "lengths")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return synth.write_dataset(tmp_path_factory.mktemp("data") / "clips", n_per_class=1, duration=3.0)


@pytest.fixture
def setup(clips, tmp_path):
    data = shutil.copytree(clips, tmp_path / "mydata")
    root = tmp_path / "cache"
    cache.ensure_features(data, root, jobs=1, progress=False)
    return data, root, root / "mydata"


def _stamps(cache_dir):
    return {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()}


def _written(before, cache_dir):
    after = _stamps(cache_dir)
    return sorted(n.removesuffix(".npy") for n in after if before.get(n) != after[n] and n.endswith(".npy"))


def _retrained(before_fp, cache_dir):
    c = cache.open_cache(cache_dir)
    fp = {n: c.manifest["arrays"].get(n, {}).get("fingerprint") for n in c.manifest["arrays"]}
    return sorted(m for m, names in READS.items() if any(fp.get(n) != before_fp.get(n) for n in names))


def _fingerprints(cache_dir):
    return {n: a["fingerprint"] for n, a in cache.open_cache(cache_dir).manifest["arrays"].items()}


def _no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("decoded audio although the cached mel was current")

    monkeypatch.setattr(audio, "load_pcm16", refuse)
    monkeypatch.setattr(audio, "load", refuse)


def test_unchanged_writes_nothing(setup):
    data, root, c = setup
    before = _stamps(c)
    cache.ensure_features(data, root, jobs=1, progress=False)
    assert _stamps(c) == before  # not even the manifest


def test_extra_view_builds_just_it_from_the_cached_mel_and_serves_others(setup, monkeypatch):
    data, root, c = setup
    before, fp = _stamps(c), _fingerprints(c)
    _no_decoding(monkeypatch)
    cache.ensure_features(data, root, arrays=cache.DEFAULT_ARRAYS + ("img120",), jobs=1, progress=False)
    assert _written(before, c) == ["img120"] and _retrained(fp, c) == []
    with_view = _stamps(c)
    cache.ensure_features(data, root, jobs=1, progress=False)  # a command that does not need img120
    assert _stamps(c) == with_view
    arr = cache.open_cache(c).array("img120")
    S = cache.open_cache(c).array("mel_db")
    np.testing.assert_array_equal(arr[4], images.image_views(S[4], ("120",))["120"])


def test_image_version_bump_rebuilds_the_views_and_retrains_the_image_models(setup, monkeypatch):
    data, root, c = setup
    before, fp = _stamps(c), _fingerprints(c)
    monkeypatch.setattr(images, "VERSION", images.VERSION + 1)
    _no_decoding(monkeypatch)
    cache.ensure_features(data, root, jobs=1, progress=False)
    assert _written(before, c) == ["img360x120", "img400"]
    assert _retrained(fp, c) == ["cnn2d", "svm"]


def test_mel_parameter_rebuilds_mel_and_views_not_the_waveforms(setup):
    data, root, c = setup
    before, fp = _stamps(c), _fingerprints(c)
    cache.ensure_features(data, root, config=cache.FeatureConfig(top_db=60.0), jobs=1, progress=False)
    assert _written(before, c) == ["img360x120", "img400", "mel_db"]
    assert _retrained(fp, c) == ["cnn2d", "mel model", "svm"]


def test_class_mapping_change_rewrites_only_labels_and_retrains_everything(setup, monkeypatch):
    data, root, c = setup
    before, fp = _stamps(c), _fingerprints(c)
    monkeypatch.setattr(dataset, "order_classes", lambda names: tuple(sorted(names, reverse=True)))
    cache.ensure_features(data, root, jobs=1, progress=False)
    assert _written(before, c) == ["labels"]
    assert _retrained(fp, c) == sorted(READS)
    opened = cache.open_cache(c)
    assert opened.classes[0] == "rock" and opened.labels[opened.files.index("rock/rock.00000.wav")] == 0


@pytest.mark.parametrize("change", ["removed", "added"])
def test_data_file_added_or_removed_rebuilds_whole(setup, change):
    data, root, c = setup
    before, fp = _stamps(c), _fingerprints(c)
    if change == "removed":
        (data / "pop" / "pop.00000.wav").unlink()
    else:
        shutil.copy(data / "pop" / "pop.00000.wav", data / "pop" / "pop.00001.wav")
    cache.ensure_features(data, root, jobs=1, progress=False)
    assert _written(before, c) == sorted(n for n in cache.DEFAULT_ARRAYS)
    assert _retrained(fp, c) == sorted(READS)
    assert cache.open_cache(c).manifest["n"] == (9 if change == "removed" else 11)


def test_fingerprints_are_read_by_runs_as_documented(setup):
    data, root, c = setup
    opened = cache.open_cache(c)
    hp = Hparams(view="mel_db", batch_size=1, lr=1e-3, optimizer="adam", max_epochs=1)
    assert set(train.run_identity("cnn1d_mel", "r80", "quick", 0, hp, opened)["inputs"]) == set(READS["mel model"])


# ---- clips of any length ----------------------------------------------------------------------------

def test_lengths_windows_and_short_clips(tmp_path, capsys):
    sr = 22050
    rng = np.random.default_rng(0)
    for name, seconds in (("a/long", 40.0), ("a/short", 2.0), ("b/tiny", 0.5), ("b/ok", 5.0)):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        y = (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
        y[: sr] = 0.5  # a marker in the first second
        sf.write(tmp_path / "d" / f"{name}.wav", y, sr, subtype="PCM_16")
    c = cache.open_cache(cache.ensure_features(tmp_path / "d", tmp_path / "c", jobs=1, progress=False))
    assert c.files == ["a/long.wav", "a/short.wav", "b/ok.wav"] and c.classes == ["a", "b"]
    assert c.array("lengths").tolist() == [40 * sr, 2 * sr, 5 * sr]
    full = audio.load_pcm16(tmp_path / "d" / "a" / "long.wav", None)
    start = (40 * sr - 661500) // 2  # the central 30 s of a clip longer than 31 s
    np.testing.assert_array_equal(c.array("wave")[0], full[start:start + 661500])
    assert not c.array("wave")[1, 2 * sr:].any()  # a short clip is zero-padded
    skipped = [f for f in c.manifest["files"] if f["status"] == "skipped"]
    assert [f["relpath"] for f in skipped] == ["b/tiny.wav"] and "under the 1-s minimum" in skipped[0]["note"]
    assert "warning: skipped" in capsys.readouterr().err


def test_track_ids_and_symlinked_pool(shared_data, tmp_path):
    pool = tmp_path / "pool"
    for s in ("gtzan_sample", "gtzan_15s"):
        for f in sorted((shared_data / s).glob("blues/*.wav"))[:2] + sorted((shared_data / s).glob("pop/*.wav"))[:2]:
            (pool / f.parent.name).mkdir(parents=True, exist_ok=True)
            (pool / f.parent.name / f"{s}__{f.name}").symlink_to(f)
    tracks = dataset.list_tracks(pool)
    assert {t.track_id for t in tracks} >= {"blues.00000", "pop.00000"}
    assert dataset.track_id("x/gtzan_2s__Blues.00012.wav") == "blues.00012"
    assert dataset.track_id("ambient/my song.flac") == "my song"
    c = cache.open_cache(cache.ensure_features(pool, tmp_path / "c", jobs=1, progress=False))
    assert c.manifest["n"] == len(tracks) and min(c.array("lengths")) >= 15 * 22050
