"""The feature cache and `python -m features`: contents, reruns, bad files, interruptions."""
import json
import shutil

import numpy as np
import pytest

from features import __main__ as cli
from features import audio, cache, dataset, images, mel, synth


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Ten 3-s synthetic clips, one per class, in GTZAN's layout and format."""
    return synth.write_dataset(tmp_path_factory.mktemp("data") / "synthetic", n_per_class=1, duration=3.0)


@pytest.fixture(scope="module")
def tiny_cache(tiny_data, tmp_path_factory):
    return cache.build_cache(tiny_data, tmp_path_factory.mktemp("cache") / "synthetic", progress=False)


@pytest.fixture
def no_default_data(monkeypatch, tmp_path):
    """Hide any data the developer has in data/ and $GTZAN_DIR."""
    monkeypatch.setattr(dataset, "DEFAULT_DATA", tmp_path / "absent" / "gtzan")
    monkeypatch.setattr(dataset, "DEFAULT_ARCHIVE", tmp_path / "absent" / "genres.tar.gz")
    monkeypatch.delenv("GTZAN_DIR", raising=False)


def test_cache_arrays_match_the_feature_functions(tiny_data, tiny_cache):
    c = cache.open_cache(tiny_cache)
    tracks = dataset.list_tracks(tiny_data)
    assert c.files == [t.relpath for t in tracks]
    assert c.labels.tolist() == list(range(10)) and c.labels.dtype == np.int64
    assert list(c.classes) == list(dataset.GENRES)
    wave, S, img400, img360 = (c.array(n) for n in ("wave", "mel_db", "img400", "img360x120"))
    assert wave.shape == (10, 661500) and wave.dtype == np.int16
    assert S.shape == (10, 128, 1292) and S.dtype == np.float32
    assert img400.shape == (10, 400, 400, 3) and img360.shape == (10, 120, 360, 3)
    assert not (c.root / "img120.npy").exists()  # not a default view
    i = 3
    y = audio.load(tracks[i].path)
    np.testing.assert_array_equal(wave[i] * np.float32(c.manifest["wave"]["scale"]), y)
    np.testing.assert_array_equal(S[i], mel.mel_db(y))
    views = images.image_views(S[i])
    np.testing.assert_array_equal(img400[i], views["400"])
    np.testing.assert_array_equal(img360[i], views["360x120"])
    assert c.array("lengths").tolist() == [3 * 22050] * 10
    m = c.manifest
    assert m["n"] == 10 and m["n_skipped"] == 0 and m["data_name"] == "synthetic"
    assert m["wave"] == {"dtype": "int16", "scale": 2.0 ** -15}
    assert [f["status"] for f in m["files"]] == ["ok"] * 10


def test_rerun_skips_then_rebuilds_on_change(tiny_data, tmp_path, no_default_data):
    data = shutil.copytree(tiny_data, tmp_path / "mydata")
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--jobs", "1"]
    assert cli.main(args) == 0
    manifest = tmp_path / "cache" / "mydata" / "manifest.json"
    first = json.loads(manifest.read_text())["created"], manifest.stat().st_mtime_ns
    assert cli.main(args) == 0  # nothing changed: not rebuilt
    assert (json.loads(manifest.read_text())["created"], manifest.stat().st_mtime_ns) == first
    (data / "rock" / "rock.00000.wav").unlink()  # input changed: rebuilt without it
    assert cli.main(args) == 0
    assert cache.open_cache(tmp_path / "cache" / "mydata").manifest["n"] == 9
    assert cli.main(args + ["--views", "120"]) == 0  # config changed: rebuilt with the extra view
    c = cache.open_cache(tmp_path / "cache" / "mydata")
    assert c.array("img120").shape == (9, 120, 120, 3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".mydata.lock", "mydata"]  # no temp folders


def test_undecodable_files_are_skipped_and_recorded(tiny_data, tmp_path, capsys):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    (data / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF\x00\x00")  # like the common copy's broken file
    (data / "pop" / "pop.00001.wav").write_bytes(b"")
    c = cache.open_cache(cache.build_cache(data, tmp_path / "c", progress=False))
    assert c.manifest["n"] == 10 and c.manifest["n_skipped"] == 2
    assert "jazz/jazz.00054.wav" not in c.files and len(c.files) == len(c.labels) == 10
    assert c.array("mel_db").shape[0] == c.array("img400").shape[0] == c.array("wave").shape[0] == 10
    skipped = {f["relpath"]: f["note"] for f in c.manifest["files"] if f["status"] == "skipped"}
    assert set(skipped) == {"jazz/jazz.00054.wav", "pop/pop.00001.wav"}
    assert all("\n" not in note and "wav" in note for note in skipped.values())
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 2
    # rows stay aligned with files.txt after compaction
    tracks = {t.relpath: t for t in dataset.list_tracks(data)}
    i = c.files.index("rock/rock.00000.wav")
    np.testing.assert_array_equal(c.array("wave")[i], audio.load_pcm16(tracks["rock/rock.00000.wav"].path))


def test_float32_waveforms_when_not_all_pcm16(tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    y = audio.load(data / "blues" / "blues.00000.wav", duration=None)
    import soundfile as sf
    from scipy.signal import resample_poly

    sf.write(data / "blues" / "blues.00000.wav", resample_poly(y, 2, 1), 44100, subtype="FLOAT")
    c = cache.open_cache(cache.build_cache(data, tmp_path / "c", progress=False))
    assert c.manifest["wave"] == {"dtype": "float32", "scale": 1.0}
    assert c.array("wave").dtype == np.float32


def test_interrupted_build_leaves_nothing(tiny_data, tiny_cache, tmp_path, monkeypatch):
    target = tmp_path / "synthetic"
    shutil.copytree(tiny_cache, target)
    before = (target / "manifest.json").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "image_views", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(tiny_data, target, progress=False)
    assert (target / "manifest.json").read_bytes() == before  # the old complete cache is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_no_data_without_fallback_is_one_line(no_default_data):
    with pytest.raises(dataset.DataError, match="no GTZAN data found: put the GTZAN folder at"):
        cache.ensure_features(None, "unused", synthetic=None)


def test_synthetic_fallback_is_loud_and_resizes(no_default_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dataset, "REPO", tmp_path)
    real = synth.write_dataset  # short clips keep the test fast; the cache pads them to 30 s
    monkeypatch.setattr(synth, "write_dataset", lambda out_dir, n_per_class: real(out_dir, n_per_class, 2.0))
    assert cli.main(["--cache", str(tmp_path / "cache"), "--synthetic", "2"]) == 0
    assert "SYNTHETIC genre set (2 clips per class)" in capsys.readouterr().out
    out = cache.ensure_features(None, tmp_path / "cache", synthetic=1, progress=False)
    assert out == tmp_path / "cache" / "synthetic"
    assert sorted(p.name for p in (tmp_path / "data" / "synthetic" / "rock").iterdir()) == ["rock.00000.wav"]
    assert cache.open_cache(out).manifest["n"] == 10


def test_named_data_that_is_unusable_is_an_error_never_a_fallback(no_default_data, tmp_path, capsys,
                                                                   monkeypatch):
    (tmp_path / "empty").mkdir()
    assert cli.main(["--data", str(tmp_path / "empty"), "--cache", str(tmp_path / "c")]) == 2
    monkeypatch.setenv("GTZAN_DIR", str(tmp_path / "nowhere"))
    assert cli.main(["--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no genre folders" in err[0] and "not found (given by $GTZAN_DIR)" in err[1]
    assert not (tmp_path / "c").exists()


def test_one_class_folder_is_one_line(tiny_data, tmp_path, capsys):
    shutil.copytree(tiny_data / "jazz", tmp_path / "one" / "jazz")
    assert cli.main(["--data", str(tmp_path / "one"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("only one class folder (jazz); a classifier needs two or more") and "\n" not in err


def test_cache_error_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cache, "ensure_features", lambda *a, **k: tmp_path / "broken")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert cli.main(["--data", str(tiny_data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_open_cache_missing_is_one_line(tmp_path):
    with pytest.raises(cache.CacheError, match="manifest.json: missing, no feature cache here"):
        cache.open_cache(tmp_path)
