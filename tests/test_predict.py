"""predict.py: model choice, windows, text/JSON/JSONL output, exit codes, and one line for every bad input."""

import dataclasses
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

import models
import predict
from features import clips, synth
from features.cache import FeatureConfig, code_fingerprint
from models.runs import run_dir_for
from helpers import deadline

SR = 22050
GENRES = list(synth.GENRES)


def fake_run(runs_root, model="cnn1d_mel", split="all", seed=0, data="mine", classes=GENRES, state=None):
    """A complete run folder as models/train.py writes it, with untrained weights (seeded)."""
    module = models.train.load_model(model)
    hp = dataclasses.asdict(module.HPARAMS)
    run_dir = run_dir_for(runs_root, data, model, split, "tiny", seed)
    run_dir.mkdir(parents=True)
    torch.manual_seed(seed)
    net, _ = module.build(len(classes))
    torch.save(net.state_dict() if state is None else state, run_dir / "model.pt")
    config = {"model": model, "split": split, "preset": "tiny", "seed": seed, "hparams": hp, "classes": list(classes),
              "features": {**dataclasses.asdict(FeatureConfig()), "view": hp["view"], "wave_scale": 2.0 ** -15,
                           "fingerprint": code_fingerprint(hp["view"], FeatureConfig())},
              "data": {"data_name": data, "synthetic": data == "synthetic"},
              "finished": f"2024-01-0{seed + 1}T00:00:00"}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "COMPLETE").write_text("")
    return run_dir


def tone(path, seconds, sr=SR, channels=1, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(path, np.repeat(y[:, None], channels, axis=1) if channels > 1 else y, sr, subtype="PCM_16")
    return path


def run_main(capsys, *argv):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    return [line for line in err.splitlines() if not line.startswith(("predict: warning:", "predict: note:"))]


# ------------------------------------------------------------------------------------------ end to end

def test_svm_trained_on_the_synthetic_set_classifies_its_clips(trained, capsys):
    data, runs = trained
    code, out, err = run_main(capsys, "--runs", runs, "--json", "--top", "99", data)
    assert code == 0
    assert "synthetic genre set" in err and "mean nothing for real music" in err
    results = json.loads(out)
    assert len(results) == 30
    for r in results:
        assert r["model"] == "synthetic/svm/all-tiny-seed0" and r["duration_s"] == 5.0
        assert len(r["top"]) == 10 and set(r["top"][0]) == {"genre", "score"}
        scores = [t["score"] for t in r["top"]]
        assert scores == sorted(scores, reverse=True)
    correct = [r["top"][0]["genre"] == os.path.basename(os.path.dirname(r["file"])) for r in results]
    assert np.mean(correct) >= 0.9


def test_text_output_of_the_svm_shows_scores(trained, capsys):
    data, runs = trained
    clip = data / "rock" / "rock.00000.wav"
    code, out, _ = run_main(capsys, "--runs", runs, clip)
    lines = out.splitlines()
    assert code == 0 and lines[0] == str(clip) and len(lines) == 4
    assert all(line.startswith("  ") and " score " in line for line in lines[1:])
    assert lines[1].split()[0] == "rock"


# ------------------------------------------------------------------------------------------ torch runs

def test_probabilities_json_and_top_clamping(tmp_path, capsys):
    fake_run(tmp_path / "runs", classes=GENRES[:4])
    clip = tone(tmp_path / "a.wav", 3.0)
    code, out, err = run_main(capsys, "--runs", tmp_path / "runs", "--json", "--top", "50", clip)
    assert code == 0 and "synthetic" not in err
    (r,) = json.loads(out)
    assert r["file"] == str(clip) and r["model"] == "mine/cnn1d_mel/all-tiny-seed0" and r["duration_s"] == 3.0
    assert [set(t) for t in r["top"]] == [{"genre", "probability"}] * 4
    probs = [t["probability"] for t in r["top"]]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    code, out, _ = run_main(capsys, "--runs", tmp_path / "runs", "--top", "2", clip)
    assert len(out.splitlines()) == 3 and float(out.splitlines()[1].split()[-1]) == round(probs[0], 3)


def test_jsonl_one_object_per_file_and_exit_1_on_a_bad_one(tmp_path, capsys):
    fake_run(tmp_path / "runs")
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    tone(folder / "a.wav", 2.0)
    tone(folder / "sub" / "B.FLAC", 2.0, sr=44100, channels=2)
    (folder / "bad.wav").write_bytes(b"not audio at all" * 10)
    (folder / "notes.txt").write_text("skipped silently")
    code, out, err = run_main(capsys, "--runs", tmp_path / "runs", "--jsonl", folder)
    assert code == 1
    objs = [json.loads(line) for line in out.splitlines()]
    assert [os.path.basename(o["file"]) for o in objs] == ["a.wav", "B.FLAC"]
    assert all(len(o["top"]) == 3 and o["duration_s"] == 2.0 for o in objs)
    (line,) = error_lines(err)
    assert "bad.wav" in line and "notes.txt" not in err


def test_a_long_file_is_scored_over_all_its_windows(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path / "runs")
    clip = tone(tmp_path / "long.wav", 70.0, sr=44100)
    calls = []
    real = clips.Clip.view
    monkeypatch.setattr(clips.Clip, "view", lambda self, name: calls.append(self.valid) or real(self, name))
    code, out, _ = run_main(capsys, "--runs", tmp_path / "runs", "--jsonl", clip)
    assert code == 0 and json.loads(out)["duration_s"] == 70.0
    assert calls == [30 * SR] * 3  # 0-30 s, 30-60 s, and the rest as the window ending at 70 s


def test_windows_rules():
    def cut(n_total, align_end, n=10, min_rest=3):
        chunks = np.array_split(np.arange(1, n_total + 1, dtype=np.float32), 4)
        w = clips.Windows(iter(chunks), n, min_rest, align_end)
        return [(y.copy(), valid) for y, valid in w], w.samples

    wins, total = cut(25, align_end=True)
    assert total == 25 and [v for _, v in wins] == [10, 10, 10]
    np.testing.assert_array_equal(wins[2][0], np.arange(16, 26))  # ends at the end: no padding
    wins, _ = cut(25, align_end=False)
    assert [v for _, v in wins] == [10, 10, 5] and not wins[2][0][5:].any()
    assert [v for _, v in cut(22, True)[0]] == [10, 10]  # a rest under min_rest is dropped
    wins, _ = cut(4, True)
    assert [v for _, v in wins] == [4] and not wins[0][0][4:].any()  # short: one padded window
    assert cut(2, True)[0] == []


def test_a_model_with_clip_log_probs_scores_blocks_by_valid_frames(tmp_path, capsys, monkeypatch):
    calls = []

    def build(n_classes):
        return torch.nn.Linear(128, n_classes), None

    def clip_log_probs(net, S_db, n_frames):
        calls.append((S_db.shape, list(n_frames)))
        means = np.stack([s[:, :n].mean(axis=1) for s, n in zip(S_db, n_frames)])
        return torch.log_softmax(net(torch.from_numpy(means)), dim=1)

    stand_in = types.SimpleNamespace(HPARAMS=models.hparams.Hparams(view="mel_db", batch_size=1, lr=0.1,
                                                                    optimizer="adam", max_epochs=1),
                                     PATCH_FRAMES=128, build=build, clip_log_probs=clip_log_probs)
    monkeypatch.setitem(sys.modules, "models.standin", stand_in)
    monkeypatch.setitem(models.REGISTRY, "standin", ("models.standin", "net"))
    fake_run(tmp_path / "runs", model="standin", classes=GENRES[:3])
    code, out, _ = run_main(capsys, "--runs", tmp_path / "runs", "--model", "standin", "--json",
                            tone(tmp_path / "long.wav", 70.0))
    assert code == 0
    assert calls == [((1, 128, 1292), [1292]), ((1, 128, 1292), [1292]), ((1, 128, 1292), [1 + 10 * SR // 512])]
    assert abs(sum(t["probability"] for t in json.loads(out)[0]["top"]) - 1) < 1e-5


# ------------------------------------------------------------------------------------------ choosing runs

def test_best_default_all_run_ensemble_and_run_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, split="r80", seed=1)  # newer, but `all` is the deployable one
    fake_run(runs, split="all", seed=0)
    clip = tone(tmp_path / "a.wav", 2.0)
    _, out, err = run_main(capsys, "--runs", runs, "--json", clip)  # no `best` run: the newest of any model
    assert "no best run" in err and json.loads(out)[0]["model"] == "mine/cnn1d_mel/r80-tiny-seed1"
    _, out, _ = run_main(capsys, "--runs", runs, "--json", "--model", "cnn1d_mel", clip)
    assert json.loads(out)[0]["model"] == "mine/cnn1d_mel/all-tiny-seed0"
    _, out, _ = run_main(capsys, "--runs", runs, "--json", "--ensemble", clip)
    assert json.loads(out)[0]["model"] == ["mine/cnn1d_mel/all-tiny-seed0", "mine/cnn1d_mel/r80-tiny-seed1"]
    _, out, _ = run_main(capsys, "--run", runs / "mine" / "cnn1d_mel" / "r80-tiny-seed1", "--json", clip)
    assert json.loads(out)[0]["model"] == "mine/cnn1d_mel/r80-tiny-seed1"
    code, _, err = run_main(capsys, "--runs", runs, "--model", "lstm", clip)
    assert code == 2 and "python run_all.py --models lstm" in err and len(err.splitlines()) == 1


def test_several_data_sets_need_data(tmp_path, capsys):
    fake_run(tmp_path / "runs", data="mine")
    fake_run(tmp_path / "runs", data="synthetic")
    clip = tone(tmp_path / "a.wav", 2.0)
    code, _, err = run_main(capsys, "--runs", tmp_path / "runs", clip)
    assert code == 2 and "--data" in err and len(err.splitlines()) == 1
    code, _, err = run_main(capsys, "--runs", tmp_path / "runs", "--data", "synthetic", clip)
    assert code == 0 and "mean nothing for real music" in err


def test_no_model_is_one_line_exit_2(tmp_path, capsys):
    code, out, err = run_main(capsys, "--runs", tmp_path / "nothing", tmp_path / "a.wav")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "python run_all.py --models best" in err


def test_usage_errors_exit_2(tmp_path):
    for argv in (["--top", "0", "a.wav"], [], ["--json", "--jsonl", "a.wav"], ["--run", "x", "--ensemble", "a"]):
        with pytest.raises(SystemExit) as exit_:
            predict.main(argv)
        assert exit_.value.code == 2


# ------------------------------------------------------------------------------------------ bad runs

def _one_line_exit_2(capsys, runs, clip, *words):
    code, out, err = run_main(capsys, "--runs", runs, clip)
    assert code == 2 and out == "" and len(error_lines(err)) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_a_run_from_other_feature_code_is_refused(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    config["features"]["fingerprint"] = "0123456789abcdef"
    (run_dir / "config.json").write_text(json.dumps(config))
    _one_line_exit_2(capsys, tmp_path / "runs", tone(tmp_path / "a.wav", 2.0), "fingerprint", "python run_all.py")


@pytest.mark.parametrize("damage", ["garbage", "other_architecture", "not_a_dict"])
def test_damaged_weights_are_one_line(tmp_path, capsys, damage):
    run_dir = fake_run(tmp_path / "runs")
    if damage == "garbage":
        (run_dir / "model.pt").write_bytes(b"\x80\x04garbage" * 50)
    elif damage == "other_architecture":
        torch.save({"weight": torch.zeros(3, 3)}, run_dir / "model.pt")
    else:
        torch.save([torch.zeros(3)], run_dir / "model.pt")
    _one_line_exit_2(capsys, tmp_path / "runs", tone(tmp_path / "a.wav", 2.0), "model.pt", "--force")


def test_an_svm_with_wrong_shapes_is_one_line(trained, tmp_path, capsys):
    _, runs = trained
    shutil.copytree(runs, tmp_path / "runs")
    path = tmp_path / "runs" / "synthetic" / "svm" / "all-tiny-seed0" / "svm.npz"
    with np.load(path) as z:
        params = dict(z)
    params["support_vectors"] = params["support_vectors"][:, :100]
    np.savez(path, **params)
    _one_line_exit_2(capsys, tmp_path / "runs", tone(tmp_path / "a.wav", 2.0), "svm.npz")


# ------------------------------------------------------------------------------------------ bad inputs

def test_short_unreadable_and_special_files_are_one_line_each(tmp_path, capsys):
    fake_run(tmp_path / "runs")
    folder = tmp_path / "in"
    folder.mkdir()
    tone(folder / "good.wav", 2.0)
    tone(folder / "short.wav", 0.5)
    os.mkfifo(folder / "pipe.wav")  # opening it would block forever
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (tmp_path / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    code, out, err = run_main(capsys, "--runs", tmp_path / "runs", folder, tmp_path / "song.m4a",
                              tmp_path / "missing.wav")
    assert code == 1 and out.splitlines()[0] == str(folder / "good.wav") and len(out.splitlines()) == 4
    lines = error_lines(err)
    assert len(lines) == 4 and "Traceback" not in err
    by_file = {name: next(line for line in lines if name in line)
               for name in ("pipe.wav", "short.wav", "song.m4a", "missing.wav")}
    assert "not a regular file" in by_file["pipe.wav"]
    assert "0.50 s long, under the 1-s minimum" in by_file["short.wav"]
    assert "convert it" in by_file["song.m4a"] and "ffmpeg" in by_file["song.m4a"]
    assert "not found" in by_file["missing.wav"]


def test_an_empty_folder_fails(tmp_path, capsys):
    fake_run(tmp_path / "runs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio")
    code, out, err = run_main(capsys, "--runs", tmp_path / "runs", tmp_path / "empty")
    assert code == 1 and out == "" and "no audio files" in err


def test_names_with_spaces_and_leading_dashes(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    tone(tmp_path / "-x y.wav", 2.0)
    code, out, _ = run_main(capsys, "--runs", "runs", "--", "-x y.wav")
    assert code == 0 and out.splitlines()[0] == "-x y.wav"


def test_names_that_are_not_utf8_or_hold_control_characters_print_escaped(tmp_path, capsys):
    fake_run(tmp_path / "runs")
    folder = tmp_path / "in"
    folder.mkdir()
    tone(os.fsencode(folder) + b"/caf\xe9 -x.wav", 2.0)  # bytes: soundfile cannot write such a str
    tone(folder / "new\nline.wav", 2.0)
    (folder / os.fsdecode(b"bad\xff.wav")).write_bytes(b"not audio" * 20)
    shown = [f"{folder}/caf\\xe9 -x.wav", f"{folder}/new\\x0aline.wav"]
    code, out, err = run_main(capsys, "--runs", tmp_path / "runs", "--json", folder)
    assert code == 1 and sorted(r["file"] for r in json.loads(out)) == shown
    (line,) = error_lines(err)
    assert line.startswith(f"predict: {folder}/bad\\xff.wav: not a recognised audio format")
    _, out, _ = run_main(capsys, "--runs", tmp_path / "runs", folder)
    assert sorted(line for line in out.splitlines() if not line.startswith(" ")) == shown


def test_devices_fifos_and_symlinks_given_directly(tmp_path, capsys):
    fake_run(tmp_path / "runs")
    good = tone(tmp_path / "good.wav", 2.0)
    os.mkfifo(tmp_path / "pipe.wav")
    links = {"link.wav": good, "zero.wav": "/dev/zero", "broken.wav": tmp_path / "gone.wav",
             "self.wav": tmp_path / "self.wav"}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    refused = ["/dev/null", "/dev/zero", tmp_path / "pipe.wav", tmp_path / "zero.wav", tmp_path / "broken.wav",
               tmp_path / "self.wav"]
    with deadline(60, "predict.main on special files"):  # opening any of them would block or never end
        code, out, err = run_main(capsys, "--runs", tmp_path / "runs", "--jsonl", tmp_path / "link.wav", *refused)
    assert code == 1 and [json.loads(line)["file"] for line in out.splitlines()] == [str(tmp_path / "link.wav")]
    lines = error_lines(err)
    assert len(lines) == len(refused) and "Traceback" not in err
    for path, line in zip(refused, lines):
        assert line.startswith(f"predict: {path}: ") and ("not a regular file" in line or "not found" in line), line


class Payload:
    """Pickles as a call that leaves a marker file: loading it must not make the call."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return shutil.copy, (__file__, str(self.marker))


def test_model_files_never_run_code(trained, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    run_dir = fake_run(tmp_path / "torch", state={"weight": Payload(marker)})
    clip = tone(tmp_path / "a.wav", 2.0)
    _one_line_exit_2(capsys, tmp_path / "torch", clip, "model.pt", "not a readable state dict")
    shutil.copytree(trained[1], tmp_path / "svm")
    path = next((tmp_path / "svm").glob("*/svm/*/svm.npz"))
    with np.load(path) as z:
        params = dict(z)
    from models.runs import seal

    # re-sealed, so the checksums pass and the loader itself must refuse
    np.savez(path, **{**params, "gamma": np.array([Payload(marker)], dtype=object)})
    seal(path.parent)
    _one_line_exit_2(capsys, tmp_path / "svm", clip, "svm.npz", "unreadable")
    assert not marker.exists() and run_dir.is_dir()
    np.savez(path, **{**params, "dual_coef": params["dual_coef"].astype(str)})
    seal(path.parent)
    _one_line_exit_2(capsys, tmp_path / "svm", clip, "svm.npz", "wrong type")
