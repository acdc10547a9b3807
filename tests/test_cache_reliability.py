"""The cache whatever a previous run left behind: damaged files, kills, two builders, write faults."""
import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features import __main__ as cli
from features import cache, files, synth
from features.files import KILL_ENV, TEMP_RE
from tests.helpers import HAS_PROC, is_zombie, unreaped, zombie

REPO = Path(__file__).resolve().parents[1]

ROW_FILES = ("manifest.json", "files.txt", "labels.npy")
FILES = ROW_FILES + ("lengths.npy", "wave.npy", "mel_db.npy", "img400.npy", "img360x120.npy")
DAMAGES = ("missing", "empty", "truncated", "garbage", "bitflip", "rows", "dtype")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three 2-s synthetic clips of three classes: every check, a tenth of the work."""
    root = synth.write_dataset(tmp_path_factory.mktemp("data") / "mini", n_per_class=1, duration=2.0)
    for folder in root.iterdir():
        if folder.name not in ("blues", "classical", "country"):
            shutil.rmtree(folder)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted build: the numbers every other build must reproduce."""
    return cache.ensure_features(data, tmp_path_factory.mktemp("ref"), jobs=1, progress=False)


@pytest.fixture
def built(reference, tmp_path):
    """A copy of the reference cache root: (cache root, cache folder)."""
    root = shutil.copytree(reference.parent, tmp_path / "cache")
    return root, root / reference.name


def numbers(cache_dir) -> dict:
    """Each array's checksum, after checking that every file matches its recorded one."""
    assert cache.verify_cache(cache_dir) == []
    return {n: a["checksum"] for n, a in cache.read_manifest(cache_dir)["arrays"].items()}


def assert_only_finished(root, name="mini"):
    """The cache root holds the lock and the cache, the cache only its finished files."""
    assert sorted(p.name for p in root.iterdir()) == [f".{name}.lock", name]
    assert sorted(p.name for p in (root / name).iterdir()) == sorted(FILES)


def stamps(cache_dir) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in cache_dir.iterdir()}


# ---- 1. our own files, damaged ---------------------------------------------------------------------

def damage(path, kind: str) -> None:
    """Damage one cache file in place the way ``kind`` says (see ``DAMAGES``)."""
    raw = path.read_bytes()
    if kind == "missing":
        path.unlink()
    elif kind in ("empty", "truncated"):
        path.write_bytes(raw[:len(raw) // 2] if kind == "truncated" else b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif kind == "bitflip":  # the structure intact, one value changed: only a checksum sees it
        i = len(raw) * 3 // 4
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1:])
    elif path.suffix == ".npy":  # a well-formed array of another row count or dtype
        a = np.load(path)
        np.save(path, np.concatenate([a, a[:1]]) if kind == "rows" else a.astype(
            np.int32 if a.dtype == np.int64 else np.float64))
    elif path.suffix == ".txt":  # one more line, or the rows reordered
        lines = raw.decode().splitlines(keepends=True)
        path.write_text("".join(lines + lines[:1] if kind == "rows" else lines[::-1]))
    else:  # a hand edit of the manifest's row count or of its class names
        m = json.loads(raw)
        m["n" if kind == "rows" else "classes"] = m["n"] + 1 if kind == "rows" else m["classes"][::-1]
        path.write_text(json.dumps(m))


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_damaged_file_is_caught_then_rebuilt(data, reference, built, name, kind, capsys):
    root, cache_dir = built
    damage(cache_dir / name, kind)
    with pytest.raises(cache.CacheError) as caught:  # open then read, as run_all.py's models do
        c = cache.open_cache(cache_dir)
        c.array(name.removesuffix(".npy"))
    assert name in str(caught.value) and "\n" not in str(caught.value)
    no_cache = name == "manifest.json" and kind == "missing"
    assert cli.main(["verify", "--data", str(data), "--cache", str(root)]) == (2 if no_cache else 1)
    out = capsys.readouterr()
    assert name in (out.err if no_cache else out.out) and "Traceback" not in out.err
    cache.ensure_features(data, root, jobs=1, progress=False)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: ") and name in notes[0]
    assert numbers(cache_dir) == numbers(reference)
    assert_only_finished(root)


def test_cache_without_checksums_is_rebuilt_once(data, reference, built, capsys):
    root, cache_dir = built
    m = cache.read_manifest(cache_dir)
    for entry in (m, *m["arrays"].values()):
        del entry["checksum"]
    (cache_dir / "manifest.json").write_text(json.dumps(m))
    assert cache.open_cache(cache_dir).array("wave").shape[0] == 3  # readers still read it
    assert "records no checksums" in cache.verify_cache(cache_dir)[0]
    cache.ensure_features(data, root, jobs=1, progress=False)
    assert "written without checksums" in capsys.readouterr().err
    assert numbers(cache_dir) == numbers(reference)


# ---- 2. killed at any moment -----------------------------------------------------------------------

def features_cmd(data, root, *extra):
    return [sys.executable, "-m", "features", "--data", str(data), "--cache", str(root), "--jobs", "1", *extra]


def run_killed(cmd, at: str) -> None:
    env = {**os.environ, KILL_ENV: at}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.mark.parametrize("start, at", [
    ("empty", "wave.npy@chunk"), ("empty", "img400.npy@chunk"), ("empty", "manifest.json"),
    ("forced", "mini@swap"),  # a --force rebuild killed with the old cache aside, the new not yet in
    ("stale", "img400.npy@chunk"), ("stale", "img400.npy@rename"), ("stale", "manifest.json"),
])
def test_killed_build_reruns_to_the_same_numbers(data, reference, built, tmp_path, start, at):
    root, cache_dir = built
    if start == "empty":
        shutil.rmtree(root)
    elif start == "stale":  # one array to rebuild alone
        (cache_dir / "img400.npy").unlink()
    cmd = features_cmd(data, root, *(["--force"] if start == "forced" else []))
    run_killed(cmd, at)
    assert any(TEMP_RE.search(p.name) for folder in (root, cache_dir) if folder.is_dir()
               for p in folder.iterdir())  # the kill left a temporary entry behind
    assert cli.main(cmd[3:]) == 0  # the same command, run again
    assert numbers(cache_dir) == numbers(reference)
    assert_only_finished(root)


def test_rebuild_killed_between_its_renames_is_completed_by_the_next_run(data, reference, built, capsys):
    root, cache_dir = built
    run_killed(features_cmd(data, root, "--force"), "mini@swap")
    assert not cache_dir.exists()  # the old cache aside, the new one complete beside it
    assert cli.main(features_cmd(data, root)[3:]) == 0
    assert "current, nothing rebuilt" in capsys.readouterr().out
    assert numbers(cache_dir) == numbers(reference)
    assert_only_finished(root)


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to tell a zombie from a running process")
def test_killed_builder_left_unreaped_leaves_nothing_after_the_rerun(data, tmp_path):
    """The issue's case: a build killed in a container whose PID 1 never reaps is a zombie, and
    ``os.kill(pid, 0)`` succeeds on a zombie; the immediate rerun must still remove its folder."""
    root = tmp_path / "cache"
    cmd = features_cmd(data, root)
    killed = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, KILL_ENV: "wave.npy@chunk"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with unreaped(killed):
        assert is_zombie(killed.pid) and (root / f".mini.partial-{killed.pid}").is_dir()
        assert cli.main(cmd[3:]) == 0
        assert_only_finished(root)


def test_leftovers_of_this_cache_go_whatever_their_pid_others_only_when_their_owner_is_gone(data, built):
    """Holding the cache's lock, every temporary entry of that cache is an orphan; another cache's
    entries are not covered by that lock: removed when their owner is gone (dead or a zombie)."""
    root, cache_dir = built
    alive = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        with zombie() if HAS_PROC else contextlib.nullcontext(dead.pid) as undead:
            for pid in (alive.pid, dead.pid, undead, os.getpid()):
                (root / f".mini.partial-{pid}").mkdir(exist_ok=True)
                (cache_dir / f"wave.npy.partial-{pid}").write_bytes(b"half")
                (root / f".other.partial-{pid}").mkdir(exist_ok=True)
            cache.ensure_features(data, root, jobs=1, progress=False)
            left = {p.name for p in root.iterdir()}
        assert left == {".mini.lock", "mini", f".other.partial-{alive.pid}", f".other.partial-{os.getpid()}"}
        assert sorted(p.name for p in cache_dir.iterdir()) == sorted(FILES)
    finally:
        alive.kill()
        alive.wait()


# ---- 3. two at once --------------------------------------------------------------------------------

def test_two_builders_take_turns_and_the_second_reuses_the_first(data, reference, tmp_path):
    root = tmp_path / "cache"
    logs = [(tmp_path / f"out{i}", tmp_path / f"err{i}") for i in range(2)]
    # both start while the cache is locked: both must wait
    with files.folder_lock(root / "mini", lambda: None, keep_file=True):
        procs = []
        for out, err in logs:
            with open(out, "w") as o, open(err, "w") as e:
                procs.append(subprocess.Popen(features_cmd(data, root), cwd=REPO, stdout=o, stderr=e))
        deadline = time.monotonic() + 60
        while not all("waiting" in e.read_text() for _, e in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.1)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    said = sorted(o.read_text().splitlines()[0].split(": ", 1)[1] for o, _ in logs)
    assert said[0].startswith("built labels") and said[1] == "current, nothing rebuilt"
    assert numbers(root / "mini") == numbers(reference)
    assert_only_finished(root)


# ---- 4. disk full, read-only, no permission --------------------------------------------------------

def raising(err: int):
    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err), "somefile")
    return fail


@pytest.mark.parametrize("step, target, err", [
    ("rebuild", "open_memmap", errno.ENOSPC), ("rebuild", "posix_fallocate", errno.ENOSPC),
    ("rebuild", "replace", errno.EROFS), ("add", "open_memmap", errno.EACCES),
    ("add", "replace", errno.ENOSPC), ("add", "posix_fallocate", errno.EDQUOT),
])
def test_write_fault_is_one_line_and_leaves_the_cache_as_it_was(data, reference, built, monkeypatch, step,
                                                                 target, err):
    root, cache_dir = built
    before = stamps(cache_dir)
    owner = np.lib.format if target == "open_memmap" else os
    monkeypatch.setattr(owner, target, raising(err))
    arrays = cache.DEFAULT_ARRAYS + (("img120",) if step == "add" else ())  # one array added, or all forced
    with pytest.raises(cache.CacheError) as caught:
        cache.ensure_features(data, root, step == "rebuild", arrays=arrays, jobs=1, progress=False)
    message = str(caught.value)
    assert message.startswith(f"{cache_dir}: cannot write") and "--cache DIR" in message and "\n" not in message
    monkeypatch.undo()
    assert stamps(cache_dir) == before
    assert_only_finished(root)


def test_read_only_cache_folder_serves_a_current_cache_and_says_what_to_do(data, built, monkeypatch, capsys):
    root, cache_dir = built
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):  # a read-only mount, as root cannot get with chmod
        if set(mode) & set("wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache, "open", read_only, raising=False)
    monkeypatch.setattr(files, "open", read_only, raising=False)  # the cache's lock
    args = ["--data", str(data), "--cache", str(root), "--jobs", "1"]
    assert cli.main(args) == 0 and "current, nothing rebuilt" in capsys.readouterr().out
    before = stamps(cache_dir)
    assert cli.main(args + ["--views", "120"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: {cache_dir}: cannot write") and "read-only" in err
    assert stamps(cache_dir) == before
    assert_only_finished(root)


def _file_size_limit():  # runs in the child before exec: a 1 MB file limit that raises EFBIG, not SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_file_size_limit_is_one_line_and_leaves_the_cache_as_it_was(data, built):
    root, cache_dir = built
    before = stamps(cache_dir)
    proc = subprocess.run(features_cmd(data, root, "--force"), cwd=REPO, capture_output=True, text=True,
                          timeout=120, preexec_fn=_file_size_limit)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert err.startswith(f"error: {cache_dir}: cannot write") and "file size limit" in err
    assert stamps(cache_dir) == before
    assert_only_finished(root)
