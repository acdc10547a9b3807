"""The model-family interface: a new family in one file plus its registration runs through run_all.py,
evaluate.py and predict.py unchanged; and every registered model, trained twice, is skipped the second time."""

import importlib.util
import json

import pytest

import evaluate
import models
import predict
import run_all
from features import synth
from models import runs


@pytest.fixture
def toy_family(monkeypatch):
    """``tests/toy_centroid.py`` registered as model ``centroid`` of family ``centroid``."""
    monkeypatch.setitem(models.REGISTRY, "centroid", ("toy_centroid", "centroid"))
    monkeypatch.setitem(models.FAMILIES, "centroid", "toy_centroid:CENTROID")


def test_a_new_family_trains_evaluates_and_predicts_through_the_scripts(tmp_path, capsys, toy_family):
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=5, duration=3.0)
    common = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
              "--preset", "tiny", "--models", "centroid"]
    assert run_all.main(common) == 0
    assert "| centroid | r80 | tiny |" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "synthetic" / "centroid" / "r80-tiny-seed0"
    assert json.loads((run_dir / "COMPLETE").read_text()).keys() == {"config.json", "centroids.npz",
                                                                      "predictions.npz"}
    assert run_all.main(common) == 0 and "skipped" in capsys.readouterr().out

    assert evaluate.main(["--runs", str(tmp_path / "runs"), "--model", "centroid", "--json",
                          "--out", str(tmp_path / "rep")]) == 0
    group = json.loads(capsys.readouterr().out)["groups"][0]
    assert group["model"] == "centroid" and group["topk_percent"]["top1"]["mean"] > 30  # chance: 10 %

    assert run_all.main(common + ["--split", "all"]) == 0
    capsys.readouterr()
    clip = sorted((data / "metal").iterdir())[0]
    assert predict.main(["--runs", str(tmp_path / "runs"), "--model", "centroid", "--json", str(clip)]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["model"] == "synthetic/centroid/all-tiny-seed0" and out["top"][0]["genre"] == "metal"


def test_a_damaged_model_file_of_the_new_family_is_one_line(tmp_path, capsys, toy_family):
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=2, duration=2.0)
    assert run_all.main(["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
                         "--preset", "tiny", "--models", "centroid", "--split", "all"]) == 0
    run_dir = tmp_path / "runs" / "synthetic" / "centroid" / "all-tiny-seed0"
    (run_dir / "centroids.npz").write_bytes(b"not an npz")
    capsys.readouterr()
    assert predict.main(["--runs", str(tmp_path / "runs"), "--model", "centroid", str(next(data.rglob("*.wav")))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "centroids.npz" in err[0] and "--force" in err[0]


TRAINABLE = [m for m in models.REGISTRY if m != "best" or importlib.util.find_spec("musicnn") is not None]


def test_every_model_trained_twice_is_skipped_the_second_time(tmp_path, capsys):
    """The run store compares identities in their JSON form: a model whose settings hold a tuple
    (best's Cs) used to retrain on every call."""
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=3, duration=3.0)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--preset", "tiny", "--models", ",".join(TRAINABLE)]
    assert run_all.main(args) == 0
    first = {r.path: r.finished for r in runs.find_runs(tmp_path / "runs", warn=pytest.fail)}
    capsys.readouterr()
    assert run_all.main(args) == 0
    out = capsys.readouterr().out
    assert "retraining" not in out and out.count("skipped (--force retrains)") == len(first)
    assert {r.path: r.finished for r in runs.find_runs(tmp_path / "runs", warn=pytest.fail)} == first
    assert {p.parent.name for p in first} == set(TRAINABLE)


def test_a_changed_setting_says_which_key_differs(tmp_path, capsys, monkeypatch):
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=3, duration=2.0)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--preset", "tiny", "--models", "svm"]
    assert run_all.main(args) == 0
    from models import svm

    monkeypatch.setattr(svm, "HPARAMS", svm.SvmParams(C=10.0))
    capsys.readouterr()
    assert run_all.main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "retraining" in x)
    assert "is from other settings or inputs; retraining (hparams.C: 100.0 -> 10.0)" in line
