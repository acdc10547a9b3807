"""models/best.py, the head on the pretrained backbone: clip features, C chosen by CV grouped by track,
probabilities, absent classes, the saved arrays; then the whole path through run_all and predict.py
with the real musicnn weights (skipped when the wheel is not installed)."""
import importlib.util
import json

import numpy as np
import pytest

from models import best


def blobs(n_per_class=12, n_classes=3, n_features=8, patches=4, seed=0):
    """Per-patch features of clips of separable classes; every clip its own track."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 3 * rng.standard_normal((n_classes, n_features))
    x = (centres[y][:, None] + rng.standard_normal((len(y), patches, n_features))).astype(np.float32)
    counts = rng.integers(1, patches + 1, len(y))
    return x, counts, y, [f"t{i}" for i in range(len(y))]


def test_clip_features_average_only_the_clips_patches():
    x = np.zeros((2, 3, 2), np.float32)
    x[0, 0], x[0, 1], x[0, 2] = [1, 2], [3, 4], [100, 100]
    x[1, 0] = [5, 6]
    np.testing.assert_allclose(best.clip_features(x, [2, 1]), [[2, 3], [5, 6]])


def test_fit_separates_and_gives_probabilities():
    x, counts, y, groups = blobs()
    params, table = best.fit(x, counts, y, groups, n_classes=4)
    assert table["chosen"] in best.HPARAMS.Cs and len(table["log_loss"]) == len(best.HPARAMS.Cs)
    lp = best.log_probs(params, x, counts)
    assert lp.shape == (len(y), 4)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, rtol=1e-9)
    assert (lp.argmax(1) == y).mean() == 1.0
    assert (lp[:, 3] <= best.ABSENT / 2).all()  # class 3 has no training clip
    assert best.params_problem(params, 4, x.shape[2]) is None


def test_two_classes_and_one_class():
    x, counts, y, groups = blobs(n_classes=2)
    params, _ = best.fit(x, counts, y, groups, n_classes=2)
    assert (best.log_probs(params, x, counts).argmax(1) == y).all()
    one = y == 0
    params, table = best.fit(x[one], counts[one], y[one], [g for g, o in zip(groups, one) if o], n_classes=2)
    assert table["log_loss"] == [] and (best.log_probs(params, x, counts).argmax(1) == 0).all()


def test_cv_folds_keep_tracks_together():
    x, counts, y, _ = blobs(n_per_class=12)
    groups = np.array([f"t{i // 3}" for i in range(len(y))])  # three files per track
    folds = best._cv_folds(y, groups, best.HPARAMS)
    assert len(folds) == best.HPARAMS.cv_folds
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    assert best._cv_folds(y[:2], groups[:2], best.HPARAMS) is None  # one track: no CV, fallback C
    few = np.isin(np.arange(len(y)) % 12, (0, 3, 6))  # 3 clips (tracks) per class: 3 folds, not 5
    assert len(best._cv_folds(y[few], groups[few], best.HPARAMS)) == 3
    _, table = best.fit(x[:6], counts[:6], y[:6], ["a"] * 6, n_classes=3)
    assert table["chosen"] == best.HPARAMS.fallback_C


def test_C_is_chosen_by_held_out_loss(monkeypatch):
    """The C with the lowest held-out log-loss wins, whatever its place in the list."""
    x, counts, y, groups = blobs(n_per_class=15, n_features=40, seed=3)
    x = x + 4 * np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)  # noisy: C matters
    z = best.clip_features(x, counts)
    z = (z - z.mean(0)) / z.std(0)
    hp = best.HeadParams(Cs=(1e-4, 1e-2, 1e2))
    C, table = best.choose_C(z, y, groups, hp)
    assert C == hp.Cs[int(np.argmin(table["log_loss"]))] and len(set(table["log_loss"])) == 3


def test_saved_arrays_round_trip_and_bad_ones_are_named(tmp_path):
    x, counts, y, groups = blobs()
    params, _ = best.fit(x, counts, y, groups, n_classes=3)
    best.save(tmp_path / "head.npz", params)
    loaded = best.load(tmp_path / "head.npz")
    np.testing.assert_array_equal(best.log_probs(loaded, x, counts), best.log_probs(params, x, counts))
    assert "do not fit" in best.params_problem(loaded, 4, x.shape[2])
    assert "lacks" in best.params_problem({k: v for k, v in loaded.items() if k != "coef"}, 3, x.shape[2])
    bad = {**loaded, "scale": np.zeros_like(loaded["scale"])}
    assert best.params_problem(bad, 3, x.shape[2]) == "non-finite weights"


needs_wheel = pytest.mark.skipif(importlib.util.find_spec("musicnn") is None,
                                 reason="the musicnn wheel is not installed (`make setup` installs it)")


@needs_wheel
def test_best_through_run_all_and_predict(tmp_path, capsys):
    """On a synthetic set: run_all trains best's r80 and all runs from the cached backbone features,
    predict.py uses best by default, and --tags prints musicnn's own tags."""
    import predict
    import run_all
    from features import synth

    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=4, duration=4.0)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--models", "best", "--preset", "tiny"]
    assert run_all.main(args) == 0
    runs = tmp_path / "runs" / "synthetic" / "best"
    config = json.loads((runs / "r80-tiny-seed0" / "config.json").read_text())
    assert config["test"]["top1"] >= 0.5  # chance is 0.1
    assert config["head_cv"]["chosen"] in best.PRESETS["tiny"]["Cs"]
    assert (runs / "all-tiny-seed0" / "head.npz").exists()
    capsys.readouterr()
    clip = next((data / "blues").iterdir())
    assert predict.main(["--runs", str(tmp_path / "runs"), "--json", str(clip)]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["model"] == "synthetic/best/all-tiny-seed0" and len(out["top"]) == 3
    assert abs(sum(t["probability"] for t in out["top"])) <= 1.0 + 1e-6
    assert predict.main(["--tags", "--json", str(clip)]) == 0
    tags = json.loads(capsys.readouterr().out)[0]["top"]
    from models import musicnn

    assert len(tags) == 5 and all(t["tag"] in musicnn.MSD_TAGS and 0 <= t["probability"] <= 1 for t in tags)


def test_without_the_wheel_best_says_how_to_install_and_the_rest_runs(tmp_path, capsys, monkeypatch):
    import predict
    import run_all
    from features import synth
    from models import musicnn

    def missing(*_):
        raise musicnn.BackboneMissing()

    monkeypatch.setattr(musicnn, "embedder", missing)
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=3, duration=3.0)
    common = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
              "--preset", "tiny"]
    assert run_all.main(common + ["--models", "best"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps musicnn==0.1.0" in err[0] and err[0].startswith("error: best")
    assert run_all.main(common + ["--models", "svm,best"]) == 1  # named: an error, nothing trained
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(run_all, "DEFAULT_MODELS", ("svm", "best"))
    assert run_all.main(common) == 0  # the default models: best is left out, the others run
    out = capsys.readouterr()
    assert "note: best skipped" in out.err and "| svm |" in out.out
    assert predict.main(["--tags", str(next((data / "rock").iterdir()))]) == 2
    assert "musicnn" in capsys.readouterr().err


@needs_wheel
def test_damaged_weights_are_one_line_with_the_fix(tmp_path, capsys, monkeypatch):
    import shutil

    import predict
    from models import musicnn

    folder = tmp_path / "MSD_musicnn"
    shutil.copytree(musicnn.weights_prefix(), folder)
    data = bytearray((folder / ".data-00000-of-00001").read_bytes())
    data[1000] ^= 0x01
    (folder / ".data-00000-of-00001").write_bytes(bytes(data))
    monkeypatch.setattr(musicnn, "weights_prefix", lambda: folder)
    musicnn.embedder.cache_clear()
    try:
        clip = tmp_path / "a.wav"
        import soundfile as sf

        sf.write(clip, np.zeros(22050 * 2, np.float32) + 0.01, 22050)
        assert predict.main(["--tags", str(clip)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(folder) in err[0] and musicnn.REINSTALL in err[0]
    finally:
        musicnn.embedder.cache_clear()
