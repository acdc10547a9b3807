"""predict.py on a music library: --out resume (SIGKILL included), torn lines, errors and --retry-errors,
--shard, --jobs, --device; the batch engine equals the file-by-file path."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import predict
from models import engine, resultlog
from models.inference import load_member

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def library(trained, tmp_path):
    """A copy of the trained fixture's synthetic clips (30 files), one bad file, and the runs root."""
    data, runs = trained
    lib = tmp_path / "lib"
    shutil.copytree(data, lib)
    (lib / "rock" / "broken.wav").write_bytes(b"RIFF not audio")
    return lib, runs


def out_lines(path: Path) -> list:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def errors(err: str) -> list:
    return [line for line in err.splitlines() if not line.startswith(("predict: note:", "predict: warning:"))]


def run(capsys, *argv) -> tuple:
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_out_writes_one_line_per_file_and_a_rerun_skips_them(library, tmp_path, capsys):
    lib, runs = library
    out = tmp_path / "genres.jsonl"
    code, _, err = run(capsys, "--runs", runs, "--jsonl", "--out", out, lib)
    lines = out_lines(out)
    n_files = len(list(lib.rglob("*.wav")))
    assert code == 1 and len(lines) == n_files == 31  # the broken file fails, the others go on
    (bad,) = [o for o in lines if "error" in o]
    assert bad["file"].endswith("broken.wav") and "convert it" in bad["error"]
    assert all(set(o["key"]) == {"size", "mtime_ns", "model_id"} for o in lines)
    assert "30 classified, 0 skipped as already in" in err and "1 failed" in err
    code, stdout, err = run(capsys, "--runs", runs, "--jsonl", "--out", out, lib)
    assert code == 0 and stdout == "" and "0 classified, 31 skipped" in err and out_lines(out) == lines
    code, _, err = run(capsys, "--runs", runs, "--out", out, "--retry-errors", lib)
    assert code == 1 and "0 classified, 30 skipped" in err and "1 failed" in err
    assert sorted(o["file"] for o in out_lines(out)) == sorted(o["file"] for o in lines)  # still one line each


def test_a_changed_file_and_another_model_are_classified_again(library, tmp_path, capsys):
    lib, runs = library
    out = tmp_path / "genres.jsonl"
    (lib / "rock" / "broken.wav").unlink()
    run(capsys, "--runs", runs, "--out", out, lib)
    changed = sorted((lib / "jazz").iterdir())[0]
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    code, _, err = run(capsys, "--runs", runs, "--out", out, lib)
    assert code == 0 and "1 classified, 29 skipped" in err
    lines = out_lines(out)
    assert len(lines) == 30 and len({o["file"] for o in lines}) == 30
    (line,) = [o for o in lines if o["file"] == str(changed)]
    assert line["key"]["mtime_ns"] == os.stat(changed).st_mtime_ns


def test_a_torn_last_line_is_cut_and_redone(library, tmp_path, capsys):
    lib, runs = library
    out = tmp_path / "genres.jsonl"
    (lib / "rock" / "broken.wav").unlink()
    run(capsys, "--runs", runs, "--out", out, lib)
    whole = out.read_bytes()
    out.write_bytes(whole[:-25])  # a kill in the middle of the last line's write
    code, _, err = run(capsys, "--runs", runs, "--out", out, lib)
    assert code == 0 and "1 classified, 29 skipped" in err
    assert sorted(map(json.dumps, out_lines(out))) == sorted(map(json.dumps, (json.loads(x) for x in
                                                                             whole.decode().splitlines())))


def test_a_file_that_is_not_ours_is_refused_not_cut(library, tmp_path, capsys):
    lib, runs = library
    out = tmp_path / "notes.txt"
    out.write_text("my notes\nthe second line")
    code, _, err = run(capsys, "--runs", runs, "--out", out, lib)
    (line,) = errors(err)
    assert code == 2 and "notes.txt: not a file of predict.py --out" in line
    assert out.read_text() == "my notes\nthe second line"


def test_sigkill_at_random_moments_then_resume_gives_one_line_per_file(library, tmp_path):
    lib, runs = library
    (lib / "rock" / "broken.wav").unlink()
    out = tmp_path / "genres.jsonl"
    cmd = [sys.executable, str(REPO / "predict.py"), "--runs", str(runs), "--out", str(out), "--jsonl",
           "--jobs", "2", str(lib)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = np.random.default_rng(7)
    for delay in rng.uniform(1.5, 4.0, 3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        resultlog.read_lines(out)  # whatever the kill left is readable (a torn tail is allowed)
    assert subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path).returncode == 0
    lines = out_lines(out)
    assert len(lines) == 30 and len({o["file"] for o in lines}) == 30 and all("top" in o for o in lines)


def test_shards_partition_the_files(library, tmp_path, capsys):
    lib, runs = library
    (lib / "rock" / "broken.wav").unlink()
    seen = []
    for k in (1, 2, 3):
        code, out, _ = run(capsys, "--runs", runs, "--jsonl", "--shard", f"{k}/3", lib)
        seen.append([json.loads(line)["file"] for line in out.splitlines()])
    assert code == 0 and all(seen) and sum(map(len, seen)) == 30 and len(set().union(*seen)) == 30
    code, out, _ = run(capsys, "--runs", runs, "--jsonl", "--shard", "2/3", lib)
    assert [json.loads(line)["file"] for line in out.splitlines()] == seen[1]  # deterministic
    with pytest.raises(SystemExit):
        predict.parse_args(["--shard", "4/3", "x.wav"])


def test_jobs_and_the_batch_engine_equal_the_file_by_file_path(library, capsys):
    import torch

    lib, runs = library
    threads = torch.get_num_threads()
    outs = [run(capsys, "--runs", runs, "--jsonl", "--jobs", str(j), lib)[1] for j in (1, 3)]
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 30
    assert torch.get_num_threads() == threads  # one per worker while they ran, then as it was
    (run_dir,) = (runs / "synthetic" / "svm").iterdir()
    member = load_member(run_dir, runs)
    files = sorted(lib.rglob("*.wav"))[:6]
    classifier = engine.Classifier(engine.Spec((str(run_dir),), str(runs)))
    batch = classifier({"path": [str(f) for f in files]})
    for f, record in zip(files, batch["record"]):
        scores = predict_scores(member, f)
        top = json.loads(record)["top"]
        assert [t["score"] for t in top] == pytest.approx(sorted(scores, reverse=True)[:3], abs=1e-6)


def predict_scores(member, path):
    from models.inference import Predictor

    return Predictor([member]).classify(path).values


def test_device_cuda_without_a_gpu_is_one_line(trained, tmp_path, capsys, monkeypatch):
    import torch

    _, runs = trained
    clip = tmp_path / "a.wav"
    sf.write(clip, np.zeros(22050 * 2, np.float32) + 0.1, 22050)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "--tags", "--device", "cuda", clip)
    (line,) = errors(err)
    assert code == 2 and "no CUDA GPU" in line


@pytest.mark.skipif(not __import__("importlib").util.find_spec("musicnn"), reason="the musicnn wheel is not installed")
def test_the_device_code_path_on_the_cpu_equals_the_default(tmp_path, capsys):
    from models import musicnn

    patches = np.random.default_rng(0).uniform(0, 3, (3, 187, 96)).astype(np.float32)
    default, on_cpu = musicnn.embedder(), musicnn.embedder("cpu")
    np.testing.assert_array_equal(default.embed(patches), on_cpu.embed(patches))
    assert default.identity == on_cpu.identity
    moved = musicnn._moved(musicnn.load(), "cpu")  # the copy a GPU gets, here on the CPU
    assert moved is not musicnn.load()
    np.testing.assert_allclose(musicnn.embed(moved, patches, outputs=musicnn.EMBEDDING),
                               musicnn.embedder("cpu", "float32").embed(patches), rtol=1e-4, atol=1e-4)


def test_engine_ray_without_ray_says_how_to_install(trained, tmp_path, capsys, monkeypatch):
    _, runs = trained
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run(capsys, "--runs", runs, "--engine", "ray", tmp_path)
    (line,) = errors(err)
    assert code == 2 and "make cluster" in line


@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="Ray is not installed (make cluster)")
def test_engine_ray_gives_the_local_lines_and_out_dir_resumes(library, tmp_path, capsys):
    lib, runs = library
    (lib / "rock" / "broken.wav").unlink()
    files = sorted(lib.glob("[bcd]*/*.wav"))[:8]
    local = run(capsys, "--runs", runs, "--jsonl", *files)[1]
    code, ray_out, _ = run(capsys, "--runs", runs, "--jsonl", "--engine", "ray", *files)
    a, b = ([json.loads(x) for x in out.splitlines()] for out in (local, ray_out))
    assert code == 0 and [o["file"] for o in a] == [o["file"] for o in b] == list(map(str, files))
    for x, y in zip(a, b):  # the same genres; numbers to 1e-5 (an actor's BLAS has other threads)
        assert [t["genre"] for t in x["top"]] == [t["genre"] for t in y["top"]]
        assert [t["score"] for t in x["top"]] == pytest.approx([t["score"] for t in y["top"]], rel=1e-5, abs=1e-5)
    shards = tmp_path / "shards"
    code, _, err = run(capsys, "--runs", runs, "--engine", "ray", "--out-dir", shards, *files)
    assert code == 0 and "8 classified" in err and "0 failed" in err
    lines = [json.loads(x) for shard in shards.glob("*.jsonl") for x in shard.read_text().splitlines()]
    assert sorted(o["file"] for o in lines) == sorted(map(str, files))
    code, _, err = run(capsys, "--runs", runs, "--engine", "ray", "--out-dir", shards, *files)
    assert code == 0 and "0 classified" in err and "8 skipped" in err


class _CountingEmbedder:
    """A stand-in backbone: (P, 187, 96) patches -> (P, 2) features; records each call's patch count."""

    def __init__(self, batch):
        self.calls, self.batch, self.name, self.n_features = [], batch, "musicnn", 2

    def embed(self, patches):
        self.calls.append(len(patches))
        m = patches.mean(axis=(1, 2))
        return np.stack([m, -m], axis=1).astype(np.float32)


class _HeadOnMean:
    """A scorer in the manner of best's head: log-softmax of the mean patch feature, weight = patches."""

    per_block = True

    def __init__(self, embedder):
        self.embedder = embedder

    def prepare(self, clip):
        clip.patches

    def __call__(self, clip):
        x = clip.embedding(self.embedder).mean(0).astype(np.float64)
        return x - np.logaddexp(*x), float(len(clip.embedding(self.embedder)))

    def segments(self, clip):
        x = clip.embedding(self.embedder).astype(np.float64)
        return x - np.logaddexp(x[:, :1], x[:, 1:]), 2.992


def _stand_in_predictor(tmp_path, embedder, segment_s=None):
    from features.clips import FeatureConfig
    from models.inference import Member, Predictor

    (tmp_path / "COMPLETE").write_text("stand-in")
    config = {"classes": ["a", "b"], "features": dict(vars(FeatureConfig()))}
    return Predictor([Member("x", tmp_path, config, "probability", _HeadOnMean(embedder))], segment_s)


def test_score_many_embeds_several_files_in_one_pass_with_the_same_results(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for i, seconds in enumerate([3.5, 1.5, 7.0, 3.2, 12.0, 2.0]):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], rng.uniform(-0.5, 0.5, int(22050 * seconds)).astype(np.float32), 22050)
    alone = _stand_in_predictor(tmp_path, _CountingEmbedder(batch=8))
    expected = [alone.classify(f).values for f in files]
    assert alone.embedders[0].calls == [1, 1, 2, 1, 4, 1]
    together = _stand_in_predictor(tmp_path, _CountingEmbedder(batch=8))
    prepared = [together.prepare(f) for f in files]
    assert [together.n_patches(p) for p in prepared] == [1, 1, 2, 1, 4, 1]
    results = together.score_many(prepared)
    assert together.embedders[0].calls == [10]
    for r, e in zip(results, expected):
        np.testing.assert_allclose(r.values, e, rtol=1e-6)
    assert together.batch == 8


def test_the_engine_groups_short_files_up_to_the_backbones_batch(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    files = []
    for i in range(12):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], rng.uniform(-0.5, 0.5, 22050 * 3).astype(np.float32), 22050)
    embedder = _CountingEmbedder(batch=4)
    classifier = engine.Classifier.__new__(engine.Classifier)
    classifier.spec, classifier.top = engine.Spec((), str(tmp_path)), 2
    classifier.predictor = _stand_in_predictor(tmp_path, embedder)
    classifier.model, classifier.group_files, classifier.on_cpu = "x", 1, False  # the GPU's way: batches
    monkeypatch.setattr(engine.concurrent.futures.Future, "done", lambda self: True)  # every file ready at once
    records = [r for _, r in engine.classify(classifier, files, jobs=3)]
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert sum(embedder.calls) == 12 and max(embedder.calls) == 4 and len(embedder.calls) < 12
    for f, r in zip(files, records):
        alone = classifier.predictor.classify(f).values
        assert r["top"][0]["probability"] == pytest.approx(round(float(alone.max()), 6), abs=1e-6)


def test_windows_say_where_each_starts_and_the_peak():
    from features.clips import Windows

    chunks = [np.full(3, 0.1, np.float32), np.array([0.1, -0.7, 0.1, 0.1], np.float32), np.full(5, 0.2, np.float32)]
    w = Windows(iter(chunks), 5, 2, align_end=True)
    assert [(w.start, valid) for _, valid in w] == [(0, 5), (5, 5), (7, 5)] and w.peak == pytest.approx(0.7)
    w = Windows(iter(chunks), 5, 2, align_end=False)
    assert [(w.start, valid) for _, valid in w] == [(0, 5), (5, 5), (10, 2)]
