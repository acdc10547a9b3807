"""The shared training loop: splits, top-k, run folders, resume/skip/force, determinism, run_all."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from features.cache import CacheError
from models import RUN_NAMES, loop, splits, top_k_accuracy, train

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def write_fake_cache(root, n_per_class=3, views=("img400", "img360x120", "wave"), seed=0, n_classes=10,
                     fingerprints=None):
    """A small cache in the exact format of ``features.cache`` with class-dependent content.

    Class c: a bright band of mel rows (row block c of 10, low classes at the bottom) over noise in the
    images, a 110 * (c + 1) Hz tone over noise in the waveform, and a loud band of mel bands in
    ``mel_db``. Fingerprints are ``fake-<name>`` unless ``fingerprints`` overrides some.
    """
    rng = np.random.default_rng(seed)
    names = GENRES[:n_classes] if n_classes <= 10 else GENRES + [f"own{i}" for i in range(n_classes - 10)]
    labels = np.repeat(np.arange(n_classes), n_per_class)
    files = [f"{names[c]}/{names[c]}.{i:05d}.wav" for c in range(n_classes) for i in range(n_per_class)]
    root.mkdir(parents=True)
    shapes = {"img400": (400, 400), "img360x120": (120, 360)}
    for view in views:
        if view == "wave":
            t = np.arange(661500) / 22050
            wave = np.stack([0.3 * np.sin(2 * np.pi * 110 * (c + 1) * t) + 0.1 * rng.standard_normal(661500)
                             for c in labels])
            np.save(root / "wave.npy", np.round(wave * 32768).astype(np.int16))
        elif view == "mel_db":
            S = rng.normal(-60, 5, (len(labels), 128, 1292)).astype(np.float32)
            for i, c in enumerate(labels):
                S[i, 12 * (c % 10):12 * (c % 10) + 12] += 40
            np.save(root / "mel_db.npy", S)
        else:
            h, w = shapes[view]
            img = rng.integers(0, 80, (len(labels), h, w, 3), dtype=np.uint8)
            band = h // 10
            for i, c in enumerate(labels):
                img[i, h - (c % 10 + 1) * band:h - (c % 10) * band] += 150
            np.save(root / f"{view}.npy", img)
    np.save(root / "labels.npy", labels.astype(np.int64))
    np.save(root / "lengths.npy", np.full(len(labels), 661500, np.int64))
    (root / "files.txt").write_text("".join(f + "\n" for f in files))
    arrays = {}
    for name in ("labels", "lengths") + tuple(views):
        a = np.load(root / f"{name}.npy", mmap_mode="r")
        arrays[name] = {"fingerprint": (fingerprints or {}).get(name, f"fake-{name}"), "dtype": a.dtype.name,
                        "shape": list(a.shape)}
    manifest = {"format": 2, "data_name": root.name, "data_root": str(root), "data_identity": "fake",
                "rows_fingerprint": "fake", "classes": names, "n": len(labels), "n_skipped": 0,
                "config": {"sr": 22050, "duration": 30.0, "n_fft": 2048, "hop_length": 512, "n_mels": 128,
                           "fmin": 0.0, "fmax": None, "top_db": 80.0},
                "wave": {"dtype": "int16", "scale": 2.0 ** -15}, "arrays": arrays, "versions": {}, "timings": {},
                "files": [{"relpath": f, "status": "ok"} for f in files]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def set_fingerprint(cache, name, value):
    """Change one array's fingerprint in a cache's manifest, as a rebuild of that array would."""
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["arrays"][name]["fingerprint"] = value
    (cache / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    return write_fake_cache(tmp_path_factory.mktemp("cache") / "fake", n_per_class=6,
                            views=("img400", "img360x120"))


@pytest.fixture
def checkpoint_every_epoch(monkeypatch):
    """A checkpoint after every epoch (by default one waits ``loop.CHECKPOINT_SECONDS``, far longer than
    a test's run), so that a run stopped after any epoch resumes there."""
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)


# ---- top-k ------------------------------------------------------------------------------------------

def test_top_k_matches_sklearn_including_ties():
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    for scores in (rng.standard_normal((200, 10)), rng.integers(0, 3, (200, 10)).astype(float)):
        for k in (1, 2, 3, 5):
            assert top_k_accuracy(labels, scores, k) == pytest.approx(
                top_k_accuracy_score(labels, scores, k=k, labels=range(10)))


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError):
        top_k_accuracy(np.array([0, 1]), np.zeros((3, 10)), 1)
    with pytest.raises(ValueError):
        top_k_accuracy(np.array([0, 10]), np.zeros((2, 10)), 1)


# ---- splits -----------------------------------------------------------------------------------------

def _gtzan_ids():
    ids = [f"{g}.{i:05d}" for g in GENRES for i in range(100)]
    return ids, np.repeat(np.arange(10), 100)


def test_random_splits_are_stratified_nested_and_order_independent():
    ids, labels = _gtzan_ids()
    r70, r80 = splits.split_indices(ids, labels, "r70", 0), splits.split_indices(ids, labels, "r80", 0)
    for part, n in (("train", 70), ("val", 10), ("test", 20)):
        assert (np.bincount(labels[r70[part]], minlength=10) == n).all()
    assert len(r80["val"]) == 0 and (r80["test"] == r70["test"]).all()
    assert (r80["train"] == np.sort(np.concatenate([r70["train"], r70["val"]]))).all()
    assert len(np.intersect1d(r70["train"], r70["test"])) == 0
    # same seed -> same split; other seed -> other split; input order does not matter
    assert (splits.split_indices(ids, labels, "r70", 0)["test"] == r70["test"]).all()
    assert not (splits.split_indices(ids, labels, "r70", 1)["test"] == r70["test"]).all()
    perm = np.random.default_rng(5).permutation(len(ids))
    shuffled = splits.split_indices([ids[i] for i in perm], labels[perm], "r70", 0)
    assert sorted(ids[i] for i in perm[shuffled["test"]]) == sorted(ids[i] for i in r70["test"])


def test_filtered_split_matches_lists_by_track_id():
    ids, labels = _gtzan_ids()
    parts = splits.split_indices(ids, labels, "filtered")
    assert [len(parts[p]) for p in ("train", "val", "test")] == [443, 197, 290]  # 70 clips in no list
    listed = (splits.STURM_DIR / "test_filtered.txt").read_text().split()
    assert sorted(ids[i] for i in parts["test"]) == sorted(train.track_id(f) for f in listed)
    # a clip missing from the data (Kaggle's unreadable jazz.00054) just drops out
    gone = ids.index("jazz.00054")
    fewer = splits.split_indices(ids[:gone] + ids[gone + 1:], np.delete(labels, gone), "filtered")
    assert sum(len(v) for v in fewer.values()) == 929


def test_filtered_lists_are_the_shared_ones(shared_data):
    for name in ("train", "valid", "test"):
        f = f"{name}_filtered.txt"
        shared = shared_data / "splits" / "sturm_filtered" / f
        assert (splits.STURM_DIR / f).read_bytes() == shared.read_bytes()


def test_plan_follows_each_models_protocol():
    parts = {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}
    raw = train.settings("cnn1d_raw", "report")[1]
    cnn2d = train.settings("cnn2d", "report")[1]
    assert splits.plan(parts, raw, "r70").final and len(splits.plan(parts, raw, "filtered").val) == 1
    no_val = splits.plan(parts, cnn2d, "filtered")  # r80 models train on train+valid of the filtered split
    assert list(no_val.train) == [0, 1, 2] and len(no_val.val) == 0 and not no_val.final
    assert list(splits.plan(parts, cnn2d, "r70").train) == [0, 1]  # r70 means 70 %, for every model


def test_bad_inputs_give_one_line_errors(tmp_path, fake_cache):
    cases = [(("svm", tmp_path / "nothing"), {}, "manifest.json: missing"),
             (("resnet", fake_cache), {}, "unknown model 'resnet'"),
             (("svm", fake_cache), {"preset": "fast"}, "unknown preset 'fast'"),
             (("svm", fake_cache), {"split": "r50"}, "unknown split 'r50'"),
             (("cnn1d_raw", fake_cache), {"preset": "tiny"}, "wave.npy: not in this cache")]
    for args, kwargs, message in cases:
        with pytest.raises((splits.TrainError, CacheError), match=message) as err:
            train.run(*args, tmp_path / "runs", **kwargs)
        assert "\n" not in str(err.value)
    bad = write_fake_cache(tmp_path / "bad", n_per_class=1, views=())
    (bad / "files.txt").write_text("blues/blues.00000.wav\n")
    with pytest.raises(CacheError, match="files.txt: 1 lines, labels.npy 10 rows, the manifest 10"):
        train.run("svm", bad, tmp_path / "runs")


# ---- run folders ------------------------------------------------------------------------------------

def _lines():
    out = []
    return out, out.append


@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_torch_run_folder_resume_skip_force(tmp_path, fake_cache):
    runs = tmp_path / "runs"
    lines, log = _lines()
    r = train.run("cnn1d_mel", fake_cache, runs, preset="tiny", seed=0, threads=2, log=log)
    d = runs / "fake" / "cnn1d_mel" / "r70-tiny-seed0"
    assert r["run_dir"] == str(d) and not r["skipped"]
    assert sorted(p.name for p in d.iterdir()) == ["COMPLETE", "config.json", "history.csv", "model.pt",
                                                  "predictions.npz"]
    config = json.loads((d / "config.json").read_text())
    assert config["epochs_run"] == 2 and (config["n_train"], config["n_val"], config["n_test"]) == (40, 10, 10)
    assert config["identity"]["inputs"] == {"labels": "fake-labels", "img400": "fake-img400"}
    assert config["reported"] == [64, 79, 86] and config["classes"] == GENRES
    assert config["data"]["cache_dir"] == str(fake_cache.resolve())
    rows = list(csv.DictReader(open(d / "history.csv")))
    assert [r_["epoch"] for r_ in rows] == ["1", "2"] and all(r_["val_acc"] for r_ in rows)
    assert not any(r_["test_acc_monitor"] for r_ in rows)  # a validation part: no test monitoring
    with np.load(d / "predictions.npz") as z:
        assert z["log_probs"].shape == (config["n_test"], 10) and z["log_probs"].dtype == np.float32
        assert np.allclose(np.exp(z["log_probs"]).sum(1), 1, atol=1e-4) and z["labels"].dtype == np.int64
        assert list(z["classes"]) == GENRES and len(z["files"]) == config["n_test"]
        top1 = top_k_accuracy(z["labels"], z["log_probs"], 1)
        assert config["test"]["top1"] == pytest.approx(top1, abs=1e-4)
    state = torch.load(d / "model.pt", weights_only=True)
    assert state["0.weight"].shape == (8, 3, 16)

    # complete -> skipped; --force -> retrained to the same numbers
    assert train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, log=log)["skipped"]
    again = train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, force=True, log=log)
    assert not again["skipped"] and again["test"] == r["test"]

    # interrupted after epoch 1 -> resumes from the checkpoint and ends where an uninterrupted run ends;
    # a --force retrain interrupted leaves the complete run as it was
    def stop_after_first_epoch(line):
        if "epoch 1/" in line:
            raise KeyboardInterrupt

    complete = {f.name: f.read_bytes() for f in d.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, force=True,
                  log=stop_after_first_epoch)
    assert {f.name: f.read_bytes() for f in d.iterdir()} == complete and sorted(d.parent.iterdir()) == [d]
    shutil.rmtree(d)
    with pytest.raises(KeyboardInterrupt):
        train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, log=stop_after_first_epoch)
    assert (d / "checkpoint.pt").exists() and not (d / "COMPLETE").exists()
    assert not [f.name for f in d.iterdir() if f.name.startswith(".")]  # no temporary files left
    lines.clear()
    resumed = train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, log=log)
    assert any("resuming the main phase after epoch 1" in line for line in lines)
    assert resumed["test"] == r["test"] and not (d / "checkpoint.pt").exists()
    with np.load(d / "predictions.npz") as z:
        assert z["log_probs"].shape == (config["n_test"], 10)


@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_final_model_on_train_val_resumes_in_either_phase(tmp_path, fake_cache, monkeypatch):
    from models import cnn1d_mel

    monkeypatch.setitem(cnn1d_mel.PRESETS, "tiny", {**cnn1d_mel.PRESETS["tiny"], "final_on_trainval": True})
    ref = train.run("cnn1d_mel", fake_cache, tmp_path / "ref", preset="tiny", threads=2, log=lambda line: None)
    d = tmp_path / "ref" / "fake" / "cnn1d_mel" / "r70-tiny-seed0"
    assert ref["final_epochs"] == ref["epochs_run"] == 2
    final = list(csv.DictReader(open(d / "history_final.csv")))
    assert [r["epoch"] for r in final] == ["1", "2"] and not any(r["val_acc"] for r in final)
    assert all(r["val_acc"] for r in csv.DictReader(open(d / "history.csv")))
    for stop_at, phase in (("epoch 2/", "main"), ("retrain epoch 1/", "final")):
        runs = tmp_path / phase

        def interrupt(line):
            if stop_at in line:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, log=interrupt)
        lines, log = _lines()
        resumed = train.run("cnn1d_mel", fake_cache, runs, preset="tiny", threads=2, log=log)
        assert any(f"resuming the {phase} phase" in line for line in lines)
        assert resumed["test"] == ref["test"] and resumed["final_epochs"] == 2


def test_svm_run_and_rebuilt_cache_retrains(tmp_path):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=5, views=("img360x120",))
    r = train.run("svm", cache, tmp_path / "runs", preset="quick", log=lambda line: None)
    d = tmp_path / "runs" / "fake" / "svm" / "r80-quick-seed0"
    assert sorted(p.name for p in d.iterdir()) == ["COMPLETE", "config.json", "predictions.npz", "svm.npz"]
    assert r["test"]["top1"] == 1.0 and r["n_test"] == 10  # the band pattern is trivially separable
    with np.load(d / "predictions.npz") as z:
        assert z["scores"].shape == (10, 10) and z["scores"].dtype == np.float32
    set_fingerprint(cache, "img360x120", "rebuilt")
    lines, log = _lines()
    again = train.run("svm", cache, tmp_path / "runs", preset="quick", log=log)
    assert not again["skipped"] and any("other settings or inputs; retraining" in line for line in lines)
    assert json.loads((d / "config.json").read_text())["identity"]["inputs"]["img360x120"] == "rebuilt"


@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_resume_restores_dropout_rng(tmp_path):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=3, views=("img400",))
    ref = train.run("cnn2d", cache, tmp_path / "ref", preset="tiny", threads=2, log=lambda line: None)

    def interrupt(line):
        if "epoch 1/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run("cnn2d", cache, tmp_path / "cut", preset="tiny", threads=2, log=interrupt)
    resumed = train.run("cnn2d", cache, tmp_path / "cut", preset="tiny", threads=2, log=lambda line: None)
    history = [(tmp_path / d / "fake" / "cnn2d" / "r80-tiny-seed0" / "history.csv").read_text()
               for d in ("ref", "cut")]
    assert [line.rsplit(",", 1)[0] for line in history[0].splitlines()] == \
        [line.rsplit(",", 1)[0] for line in history[1].splitlines()]
    assert resumed["test"] == ref["test"]


def test_same_seed_same_numbers(tmp_path):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=3, views=("img400",))
    a = train.run("lstm", cache, tmp_path / "a", preset="tiny", seed=3, threads=2, log=lambda line: None)
    b = train.run("lstm", cache, tmp_path / "b", preset="tiny", seed=3, threads=2, log=lambda line: None)
    ha = (tmp_path / "a" / "fake" / "lstm" / "r80-tiny-seed3" / "history.csv").read_text()
    hb = (tmp_path / "b" / "fake" / "lstm" / "r80-tiny-seed3" / "history.csv").read_text()
    strip = [line.rsplit(",", 1)[0] for line in ha.splitlines()]  # drop the seconds column
    assert strip == [line.rsplit(",", 1)[0] for line in hb.splitlines()] and a["test"] == b["test"]
    with np.load(tmp_path / "a" / "fake" / "lstm" / "r80-tiny-seed3" / "predictions.npz") as za, \
            np.load(tmp_path / "b" / "fake" / "lstm" / "r80-tiny-seed3" / "predictions.npz") as zb:
        assert np.array_equal(za["log_probs"], zb["log_probs"])


def test_run_all_trains_and_prints_table(tmp_path, fake_cache, monkeypatch, capsys):
    import run_all

    monkeypatch.setattr(run_all, "ensure_features", lambda *a, **k: fake_cache)
    rc = run_all.main(["--models", "svm,cnn1d_mel", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
                       "--seeds", "2", "--threads", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "cnn1d_mel r70-tiny-seed1 epoch 2/2" in out
    rows = [line for line in out.splitlines() if line.startswith("| svm") or line.startswith("| cnn1d_mel")]
    assert len(rows) == 4 and "| 64/79/86 |" in rows[1] and "| 64/-/- |" in rows[0]
    assert (tmp_path / "runs" / "fake" / "svm" / "r80-tiny-seed1" / "COMPLETE").exists()
    rc = run_all.main(["--models", "nope", "--preset", "tiny", "--runs", str(tmp_path / "runs")])
    assert rc == 1 and capsys.readouterr().err.strip() == (
        "error: unknown model 'nope'; choose from " + ", ".join(RUN_NAMES))


# ---- tracks, folds, `all` ---------------------------------------------------------------------------

def _pool_ids():
    """A pool like ../shared/data's: some tracks have a full clip and excerpts, under one label."""
    rng = np.random.default_rng(1)
    ids, labels = [], []
    for c, g in enumerate(GENRES):
        for i in range(12):
            for _ in range(rng.integers(1, 4)):  # 1-3 files of the same track
                ids.append(f"{g}.{i:05d}")
                labels.append(c)
    return ids, np.array(labels)


@pytest.mark.parametrize("split", ["r70", "r80", "k5f0", "k5f3", "k3f2"])
def test_no_track_on_both_sides_ever(split):
    ids, labels = _pool_ids()
    parts = splits.split_indices(ids, labels, split, seed=2)
    sides = {p: {ids[i] for i in parts[p]} for p in parts}
    assert not (sides["train"] & sides["test"]) and not (sides["train"] & sides["val"])
    assert not (sides["val"] & sides["test"])
    assert sum(len(v) for v in parts.values()) == len(ids)


def test_folds_partition_every_track_once_stratified():
    ids, labels = _gtzan_ids()
    tests = [splits.split_indices(ids, labels, f"k5f{i}", seed=0)["test"] for i in range(5)]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(1000))
    for t in tests:
        assert (np.bincount(labels[t], minlength=10) == 20).all()
    assert splits.split_indices(ids, labels, "all")["train"].tolist() == list(range(1000))
    with pytest.raises(splits.TrainError, match="unknown split 'k5f5'"):
        splits.split_indices(ids, labels, "k5f5")


def test_one_track_under_two_labels_is_an_error():
    with pytest.raises(splits.TrainError, match="track 'blues.00001' has files under two labels"):
        splits.split_indices(["blues.00001", "blues.00001"], np.array([0, 1]), "r80")


def test_split_all_trains_on_everything_and_tests_nothing(tmp_path, fake_cache):
    r = train.run("svm", fake_cache, tmp_path / "runs", split="all", log=lambda line: None)
    d = tmp_path / "runs" / "fake" / "svm" / "all-quick-seed0"
    assert r["test"] is None and r["n_train"] == 60 and r["n_test"] == 0
    assert sorted(p.name for p in d.iterdir()) == ["COMPLETE", "config.json", "svm.npz"]


# ---- the report's protocol --------------------------------------------------------------------------

def test_stopping_rule_threshold_zero_and_retrain_epochs(tmp_path, monkeypatch):
    from models import cnn1d_raw

    cache = write_fake_cache(tmp_path / "fake", n_per_class=5, views=("wave",))
    monkeypatch.setitem(cnn1d_raw.PRESETS, "tiny", {"max_epochs": 4, "batch_size": 10, "stop_acc": 0.0})
    r = train.run("cnn1d_raw", cache, tmp_path / "runs", preset="tiny", threads=2, log=lambda line: None)
    d = tmp_path / "runs" / "fake" / "cnn1d_raw" / "r70-tiny-seed0"
    assert r["epochs_run"] == 1 and r["stopped_early"] and r["final_epochs"] == 1
    assert len(list(csv.DictReader(open(d / "history_final.csv")))) == 1


def test_separable_cache_stops_early_on_epoch_accuracy(tmp_path, monkeypatch):
    from models import cnn1d_mel

    cache = write_fake_cache(tmp_path / "fake", n_per_class=6, views=("img400",))
    monkeypatch.setitem(cnn1d_mel.PRESETS, "tiny", {"max_epochs": 30, "batch_size": 10})
    r = train.run("cnn1d_mel", cache, tmp_path / "runs", preset="tiny", threads=2, log=lambda line: None)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "fake" / "cnn1d_mel" / "r70-tiny-seed0" / "history.csv")))
    accs = [float(row["train_acc"]) for row in rows]
    assert r["stopped_early"] and len(rows) < 30 and accs[-1] > 0.80 and all(a <= 0.80 for a in accs[:-1])


def test_epoch_accuracy_is_correct_over_total():
    class Constant(torch.nn.Module):  # predicts class 0 for every clip
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.log_softmax(torch.tensor([[5.0, 0.0]]).repeat(len(x), 1) + self.w, 1)

    hp = loop.Hparams(view="x", batch_size=4, lr=0.0, optimizer="sgd", max_epochs=1)
    labels = np.array([0, 0, 0, 0, 1])  # batches of 4 (all right) and 1 (wrong): 4/5, not (1 + 0) / 2
    feed = loop.Feed(object(), hp, np.zeros((5, 1), np.float32), None, labels, None, 2, torch.device("cpu"))
    net = Constant()
    _, acc = loop.train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.0), None, feed, np.arange(5),
                               torch.from_numpy, np.random.default_rng(0), None)
    assert acc == pytest.approx(0.8)


def test_r80_runs_record_monitoring_test_accuracy(tmp_path):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=3, views=("img400",))
    train.run("cnn2d", cache, tmp_path / "runs", preset="tiny", threads=2, log=lambda line: None)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "fake" / "cnn2d" / "r80-tiny-seed0" / "history.csv")))
    assert all(r["test_acc_monitor"] != "" and r["val_acc"] == "" for r in rows)


# ---- any number of classes --------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [3, 12])
def test_any_class_count_end_to_end(tmp_path, n_classes):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=5, views=("img400", "img360x120"), n_classes=n_classes)
    for model in ("cnn1d_mel", "svm"):
        r = train.run(model, cache, tmp_path / "runs", preset="tiny", threads=2, log=lambda line: None)
        split = r["split"]
        with np.load(tmp_path / "runs" / "fake" / model / f"{split}-tiny-seed0" / "predictions.npz") as z:
            key = "log_probs" if model != "svm" else "scores"
            assert z[key].shape == (r["n_test"], n_classes) and len(z["classes"]) == n_classes


@pytest.mark.parametrize("name", ["cnn1d_raw", "cnn1d_mel", "cnn2d", "lstm"])
def test_models_build_for_any_class_count(name):
    module = train.load_model(name)
    for n in (2, 12):
        net, _ = module.build(n)
        assert list(net.parameters())[-1].shape[0] == n


# ---- what retrains ----------------------------------------------------------------------------------

def test_run_identity_holds_only_the_arrays_its_model_reads(tmp_path):
    cache = write_fake_cache(tmp_path / "fake", n_per_class=1, views=("img400", "img360x120", "wave"))
    from features.cache import open_cache

    def identities():
        data = open_cache(cache)
        return {m: train.run_identity(m, "r80", "quick", 0, train.settings(m, "quick")[1], data)
                for m in ("cnn1d_raw", "cnn2d", "svm")}

    before = identities()
    set_fingerprint(cache, "img400", "images v2")  # an image-code change: the image models retrain
    after = identities()
    assert after["cnn1d_raw"] == before["cnn1d_raw"] and after["svm"] == before["svm"]
    assert after["cnn2d"] != before["cnn2d"]
    set_fingerprint(cache, "labels", "other classes")  # a class-mapping change: every run retrains
    assert all(identities()[m] != after[m] for m in after)
