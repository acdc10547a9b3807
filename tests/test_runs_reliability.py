"""Run folders whatever a previous run left behind: damaged files (each file x each kind of damage),
SIGKILL at the kill points of both phases, two run_all.py at once, and disk faults.

Damage is generated here; the fake cache (``write_fake_cache``), the SVM (fits in ms) and cnn1d_mel's
tiny preset keep it fast. Subprocesses only where a kill, a second process or a file size limit is the
point."""

import contextlib
import errno
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import evaluation.figures
import run_all
from features.files import KILL_ENV, TEMP_RE, folder_lock, write_advice
from models import loop, train
from models.runs import RunError, seal, seal_bytes, verify_run
from tests.helpers import HAS_PROC, is_zombie, unreaped, zombie
from tests.test_train import write_fake_cache

REPO = Path(__file__).resolve().parents[1]
TORCH_FILES = ("history.csv", "model.pt")            # damaged in the cnn1d_mel run
SVM_FILES = ("config.json", "svm.npz", "predictions.npz", "COMPLETE")   # damaged in the svm run
DAMAGES = ("missing", "empty", "truncated", "garbage", "wrong")


def quiet(line):
    pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # two classes of five: the smallest cache whose r70 split has a validation part (cnn1d_mel's retrain)
    return write_fake_cache(tmp_path_factory.mktemp("cache") / "fake", n_per_class=5, n_classes=2,
                            views=("img400", "img360x120"))


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """A finished svm and cnn1d_mel run (tiny), trained once; tests copy them."""
    root = tmp_path_factory.mktemp("reference") / "runs"
    svm = train.run("svm", cache, root, preset="tiny", log=quiet)
    mel = train.run("cnn1d_mel", cache, root, preset="tiny", threads=2, log=quiet)
    return root, {"svm": svm, "cnn1d_mel": mel}


def run_folder(root, model):
    return root / "fake" / model / ("r80-tiny-seed0" if model == "svm" else "r70-tiny-seed0")


def damage(path: Path, kind: str) -> None:
    """Damage a run file in place: remove it, empty it, cut it, scramble it, or give it the wrong shape."""
    data = path.read_bytes()
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    else:
        path.write_bytes(wrong_content(path))


def wrong_content(path: Path) -> bytes:
    """Well-formed content of the file's kind with the wrong structure, shape or dtype."""
    tmp = path.with_name("wrong" + path.suffix)
    if path.suffix == ".npz":
        with np.load(path) as z:
            arrays = {k: np.atleast_1d(z[k].astype(np.float64) if z[k].dtype.kind in "biuf" else z[k])[..., :1]
                      for k in z.files}
        np.savez(tmp, **arrays)
    elif path.suffix == ".pt":
        torch.save({"0.weight": torch.zeros(2, 2)}, tmp)
    elif path.suffix == ".csv":
        tmp.write_text("epoch,train_loss\n1,abc\n")
    else:   # config.json, COMPLETE
        tmp.write_text(json.dumps(["config.json", 1]))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def finished_only(root: Path) -> None:
    """Every entry under ``root`` is a finished, verified run: no temporary, lock or checkpoint left."""
    for path in root.rglob("*"):
        assert not TEMP_RE.search(path.name) and not path.name.endswith(".lock"), path
        assert path.name != "checkpoint.pt", path
    for run in root.glob("*/*/*"):
        assert verify_run(run).checksums


def same_predictions(a: Path, b: Path) -> None:
    with np.load(a / "predictions.npz") as za, np.load(b / "predictions.npz") as zb:
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)


# ---- 1. damaged files -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("name", TORCH_FILES + SVM_FILES)
def test_damaged_file_is_reported_and_retrained(name, kind, reference, cache, tmp_path, monkeypatch, capsys):
    ref_root, results = reference
    root = tmp_path / "runs"
    shutil.copytree(ref_root, root)
    model = "cnn1d_mel" if name in TORCH_FILES else "svm"
    run, other = run_folder(root, model), run_folder(root, "cnn1d_mel" if model == "svm" else "svm")
    damage(run / name, kind)
    legacy = (name, kind) == ("COMPLETE", "empty")   # an empty COMPLETE is a run from before checksums

    # verify_run (what evaluate.py and predict.py call): one line naming the file and the repair command
    if legacy:
        assert verify_run(run).checksums is None
    else:
        with pytest.raises(RunError) as err:
            verify_run(run)
        line = str(err.value)
        assert "\n" not in line and str(run if (name, kind) == ("COMPLETE", "missing") else run / name) in line
        split = run.name.split("-")[0]
        assert f"python run_all.py --models {model} --split {split} --preset tiny --seed 0" in line
        assert line.endswith(f"--data {cache} --force") or name in ("config.json", "COMPLETE")

    # evaluate.py --all: one line for the damaged run, the other run evaluated
    monkeypatch.setattr(evaluation.figures, "save_figure", lambda fig, path: Path(path))
    code = evaluate.main(["--runs", str(root), "--out", str(tmp_path / "fig"), "--all", "--json"])
    captured = capsys.readouterr()
    groups = {g["model"]: g for g in json.loads(captured.out)["groups"]}
    assert code == 0 and "Traceback" not in captured.err
    if legacy:
        assert groups[model]["unverified_runs"] == 1 and captured.err == ""
    else:
        (warning,) = captured.err.strip().splitlines()
        assert warning.startswith("evaluate.py: warning: ") and name.split(".")[0] in warning
        assert set(groups) == {other.parent.name}

    # run_all's training: a note, retrained to the numbers of the undamaged run (torch: model.pt below)
    if model == "svm":
        lines = []
        again = train.run("svm", cache, root, preset="tiny", log=lines.append)
        assert not again["skipped"] and again["test"] == results["svm"]["test"]
        assert (name, kind) == ("COMPLETE", "missing") or any("retraining" in line for line in lines)
        same_predictions(run, run_folder(ref_root, "svm"))
        finished_only(root)


def test_damaged_weights_retrained_by_run_all(reference, cache, tmp_path, monkeypatch, capsys):
    ref_root, results = reference
    root = tmp_path / "runs"
    shutil.copytree(ref_root, root)
    damage(run_folder(root, "cnn1d_mel") / "model.pt", "truncated")
    monkeypatch.setattr(run_all, "ensure_features", lambda *a, **k: cache)
    code = run_all.main(["--models", "svm,cnn1d_mel", "--preset", "tiny", "--runs", str(root), "--threads", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "model.pt: damaged (its bytes differ from the sha256 recorded in COMPLETE); retraining" in out
    assert "svm r80-tiny-seed0: complete" in out
    same_predictions(run_folder(root, "cnn1d_mel"), run_folder(ref_root, "cnn1d_mel"))
    finished_only(root)


@pytest.mark.parametrize("config, problem", [
    ({"model": "lstm"}, "model is 'lstm', the folder says 'svm'"),
    ({"seed": 4}, "seed is 4"),
    ({"classes": "blues"}, "'classes' is not a list"),
    ({"data": [1]}, "'data' is not an object"),
])
def test_config_structure_checked_even_with_matching_checksums(config, problem, reference, tmp_path):
    """A user's edit that also rewrote COMPLETE (or an old run without checksums) is still checked."""
    run = tmp_path / "fake" / "svm" / "r80-tiny-seed0"
    shutil.copytree(run_folder(reference[0], "svm"), run)
    path = run / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    for sealed in (True, False):
        seal(run) if sealed else (run / "COMPLETE").write_bytes(b"")
        with pytest.raises(RunError, match=problem):
            verify_run(run)


def test_a_file_not_written_by_the_run_is_refused(reference, tmp_path):
    run = tmp_path / "fake" / "svm" / "r80-tiny-seed0"
    shutil.copytree(run_folder(reference[0], "svm"), run)
    (run / "history_final.csv").write_text("epoch,train_loss,train_acc,val_acc,seconds\n")
    with pytest.raises(RunError, match="history_final.csv: not written by this run"):
        verify_run(run)


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "wrong", "old format"])
def test_damaged_checkpoint_starts_over_with_a_note(kind, tmp_path):
    path = tmp_path / "checkpoint.pt"
    body = io.BytesIO()
    torch.save({"identity": {"a": 1}}, body)
    path.write_bytes(seal_bytes(body.getvalue()))
    if kind == "old format":   # a checkpoint from before checksums: torch.save's bytes alone
        path.write_bytes(body.getvalue())
    elif kind != "wrong":      # "wrong": a sealed checkpoint whose content lacks the state
        damage(path, kind)
    lines = []
    resume = loop._Resume(path, {"a": 1}, lines.append, "m")
    assert resume.state is None and resume.history == []
    (line,) = lines
    assert line.startswith(f"m: {path}: ") and line.endswith("; starting over")


# ---- 2. killed at any moment ------------------------------------------------------------------------

RUN_ALL = """
import sys
from pathlib import Path
import run_all
from models import cnn1d_mel
cnn1d_mel.PRESETS["tiny"] = {**cnn1d_mel.PRESETS["tiny"], "final_on_trainval": True}  # both phases
run_all.ensure_features = lambda *a, **k: Path(sys.argv[1])
sys.exit(run_all.main(sys.argv[2:]))
"""


def run_all_process(cache, root, models="svm,cnn1d_mel", kill_at=None, args=(), **kw):
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env.update({KILL_ENV: kill_at} if kill_at else {})
    return subprocess.Popen([sys.executable, "-c", RUN_ALL, str(cache), "--models", models, "--preset", "tiny",
                             "--runs", str(root), "--threads", "1", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_at_every_kind_of_write_then_same_numbers(cache, tmp_path, monkeypatch):
    from models import cnn1d_mel

    monkeypatch.setitem(cnn1d_mel.PRESETS, "tiny", {**cnn1d_mel.PRESETS["tiny"], "final_on_trainval": True})
    ref = tmp_path / "ref"
    for model in ("svm", "cnn1d_mel"):
        train.run(model, cache, ref, preset="tiny", threads=1, log=quiet)
    root = tmp_path / "runs"
    # svm's COMPLETE (a run file); cnn1d_mel's first checkpoint (main phase); its retrain (final phase)
    for kill_at in ("COMPLETE", "checkpoint.pt", "history_final.csv"):
        p = run_all_process(cache, root, kill_at=kill_at)
        p.communicate()
        assert p.returncode == -signal.SIGKILL, kill_at
    p = run_all_process(cache, root)
    out, err = p.communicate()
    assert p.returncode == 0, err
    assert "resuming the main phase after epoch 2" in out
    for model in ("svm", "cnn1d_mel"):
        same_predictions(run_folder(root, model), run_folder(ref, model))
    finished_only(root)


def test_leftovers_of_this_run_go_whatever_their_pid_others_only_when_their_owner_is_gone(cache, tmp_path):
    """Holding a run's lock, every temporary entry of that run is an orphan (in it and beside it);
    another run's entries beside it are not covered by that lock: removed when their owner is gone."""
    root = tmp_path / "runs"
    run = run_folder(root, "svm")
    run.mkdir(parents=True)
    alive = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()   # its pid now names no process
    try:
        with zombie() if HAS_PROC else contextlib.nullcontext(dead.pid) as undead:
            for pid in (alive.pid, dead.pid, undead, os.getpid()):
                (run / f".svm.npz.tmp-{pid}-abcdef").write_bytes(b"half")
                (run.parent / f".{run.name}.partial-{pid}").mkdir()
                (run.parent / f".r80-tiny-seed1.partial-{pid}").mkdir()
            train.run("svm", cache, root, preset="tiny", log=quiet)
            left = {p.name for p in run.parent.iterdir()}
        assert left == {run.name, f".r80-tiny-seed1.partial-{alive.pid}", f".r80-tiny-seed1.partial-{os.getpid()}"}
        assert verify_run(run).checksums and not [p for p in run.iterdir() if TEMP_RE.search(p.name)]
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to tell a zombie from a running process")
def test_killed_run_left_unreaped_leaves_nothing_after_the_rerun(cache, reference, tmp_path):
    root = tmp_path / "runs"
    killed = run_all_process(cache, root, models="svm", kill_at="COMPLETE")
    with unreaped(killed):
        assert is_zombie(killed.pid) and any(TEMP_RE.search(p.name) for p in root.rglob("*"))
        assert not train.run("svm", cache, root, preset="tiny", log=quiet)["skipped"]
        finished_only(root)
    same_predictions(run_folder(root, "svm"), run_folder(reference[0], "svm"))


@pytest.mark.parametrize("model, kill_at", [
    ("cnn1d_mel", "checkpoint.pt"),        # training
    ("svm", "COMPLETE"),                   # sealing the new run
    ("svm", "r80-tiny-seed0@swap"),        # between the two renames of the swap
])
def test_killed_forced_retrain_leaves_the_old_run_or_the_new_one(model, kill_at, reference, cache, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(reference[0], root)
    run = run_folder(root, model)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    p = run_all_process(cache, root, models=model, kill_at=kill_at, args=("--force",))
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    if kill_at.endswith("@swap"):   # the old run set aside, the new one complete beside it
        aside = {q.name for q in run.parent.iterdir() if TEMP_RE.search(q.name)}
        assert not run.exists() and aside == {f".{run.name}.old-{p.pid}", f".{run.name}.partial-{p.pid}"}
    else:                           # until the new run is complete, the old one is there, whole
        assert {q.name: q.read_bytes() for q in run.iterdir()} == before and verify_run(run).checksums
    # the next run_all.py (here without --force) finds the old run, or mends the swap to the new one
    assert train.run(model, cache, root, preset="tiny", threads=2, log=quiet)["skipped"]
    assert kill_at.endswith("@swap") or {q.name: q.read_bytes() for q in run.iterdir()} == before
    same_predictions(run, run_folder(reference[0], model))
    finished_only(root)


# ---- 3. two at once ---------------------------------------------------------------------------------

def test_two_run_all_at_once_train_each_run_once(cache, reference, tmp_path):
    root = tmp_path / "runs"
    procs = [run_all_process(cache, root, models="svm") for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = "".join(out for out, _ in outs)
    assert text.count("svm r80-tiny-seed0: fitted") == 1 and text.count("svm r80-tiny-seed0: complete") == 1
    same_predictions(run_folder(root, "svm"), run_folder(reference[0], "svm"))
    finished_only(root)


def test_second_waits_for_the_lock_saying_so_then_reuses(cache, reference, tmp_path):
    root = tmp_path / "runs"
    run = run_folder(root, "svm")
    holder = folder_lock(run, lambda: None)
    assert holder.__enter__()
    p = run_all_process(cache, root, models="svm")
    first = p.stdout.readline()
    while "waiting" not in first and first:
        first = p.stdout.readline()
    assert "another process is training" in first
    # while the second waits, this process finishes the run; the second then reuses it
    shutil.copytree(run_folder(reference[0], "svm"), run, dirs_exist_ok=True)
    holder.__exit__(None, None, None)
    out, err = p.communicate()
    assert p.returncode == 0 and "svm r80-tiny-seed0: complete" in out and "fitted" not in out, err
    finished_only(root)


# ---- 4. disk full, read-only, no permission ---------------------------------------------------------

@pytest.mark.parametrize("args", [("--seed", "1"), ("--force",)])   # a new run; a retrain of a complete one
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_fault_one_line_no_partial_files_previous_runs_kept(code, args, reference, cache, tmp_path,
                                                                  monkeypatch, capsys):
    from features.files import atomic_write
    from models import svm

    root = tmp_path / "runs"
    shutil.copytree(reference[0], root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def failing(path, write):
        def half(f):
            f.write(b"half")
            raise OSError(code, os.strerror(code), str(path))
        atomic_write(path, half)

    monkeypatch.setattr(svm, "atomic_write", failing)
    monkeypatch.setattr(run_all, "ensure_features", lambda *a, **k: cache)
    rc = run_all.main(["--models", "svm", "--preset", "tiny", "--runs", str(root), *args])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and line.startswith(f"error: {root}") and f"runs folder {root}" in line
    assert write_advice(OSError(code, os.strerror(code)), "--runs DIR") in line
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before   # nothing partial, nothing lost
    assert not [p for p in root.rglob("*") if TEMP_RE.search(p.name)]
    assert verify_run(run_folder(root, "svm")).checksums


def test_read_only_runs_folder_serves_complete_runs(reference, cache, tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    shutil.copytree(reference[0], root)

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(train, "open", read_only, raising=False)
    monkeypatch.setattr(run_all, "ensure_features", lambda *a, **k: cache)
    assert run_all.main(["--models", "svm", "--preset", "tiny", "--runs", str(root)]) == 0
    assert "svm r80-tiny-seed0: complete" in capsys.readouterr().out
    monkeypatch.setattr(train.Path, "mkdir", read_only)
    assert run_all.main(["--models", "svm", "--preset", "tiny", "--seed", "2", "--runs", str(root)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Read-only file system" in line and write_advice(OSError(errno.EROFS, ""), "--runs DIR") in line


def test_file_size_limit_efbig_one_line(reference, cache, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(reference[0], root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # the write then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    p = run_all_process(cache, root, models="svm", args=("--seed", "3"), preexec_fn=limit)
    _, err = p.communicate()
    (line,) = err.strip().splitlines()
    assert p.returncode == 1 and "File too large" in line and write_advice(OSError(errno.EFBIG, ""), "--runs DIR") in line
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
