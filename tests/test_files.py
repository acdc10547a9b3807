"""features/files.py: the folder lock, the advice for a failed write, the sha256 and JSON helpers."""
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import files

REPO = Path(__file__).resolve().parents[1]
# A second process: waits for the folder's lock (saying "waiting"), then says whether it holds it
# and whether the lock file it holds is the one at the lock's path.
SECOND = """
import sys
from pathlib import Path
from features.files import folder_lock
folder = Path(sys.argv[1])
with folder_lock(folder, lambda: print("waiting", flush=True)) as held:
    print("held", held, folder.with_name(f".{folder.name}.lock").exists(), flush=True)
"""


def test_second_process_waits_then_holds_and_the_lock_file_goes(tmp_path):
    folder = tmp_path / "runs" / "run"  # its parent does not exist yet: folder_lock creates it
    lock = tmp_path / "runs" / ".run.lock"
    with files.folder_lock(folder, lambda: pytest.fail("nobody holds it")) as held:
        assert held and lock.exists()
        second = subprocess.Popen([sys.executable, "-c", SECOND, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        assert second.stdout.readline() == "waiting\n"
        assert second.poll() is None  # still waiting while this process holds the lock
    out, _ = second.communicate(timeout=60)
    # this process removed the file the second was waiting on: it took the lock again on a new one
    assert second.returncode == 0 and out == "held True True\n"
    assert not lock.exists()


def test_lock_file_stays_with_keep_file(tmp_path):
    with files.folder_lock(tmp_path / "cache", lambda: None, keep_file=True) as held:
        assert held
    assert (tmp_path / ".cache.lock").exists()


@pytest.mark.parametrize("code", files.NOT_WRITABLE)
def test_read_only_parent_yields_false(tmp_path, monkeypatch, code):
    def read_only(path, mode="r", *args, **kwargs):  # a read-only mount, as root cannot get with chmod
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(files, "open", read_only, raising=False)
    with files.folder_lock(tmp_path / "cache", lambda: pytest.fail("nothing to wait for")) as held:
        assert held is False


def test_other_errors_raise_and_no_fcntl_yields_false(tmp_path, monkeypatch):
    def full(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(files, "open", full, raising=False)
    with pytest.raises(OSError), files.folder_lock(tmp_path / "cache", lambda: None):
        pass
    monkeypatch.setattr(files, "fcntl", None)  # Windows
    with files.folder_lock(tmp_path / "cache", lambda: None) as held:
        assert held is False


@pytest.mark.parametrize("code, text", [
    (errno.ENOSPC, "the disk is full: free some space, or pass --runs DIR on another disk"),
    (errno.EDQUOT, "the disk quota is used up: free some space, or pass --runs DIR on another disk"),
    (errno.EROFS, "the file system is read-only: pass --runs DIR on a writable disk"),
    (errno.EACCES, "no permission to write there: make it writable, or pass --runs DIR"),
    (errno.EPERM, "no permission to write there: make it writable, or pass --runs DIR"),
    (errno.EFBIG, "a file would exceed the file size limit (ulimit -f): raise it, or pass --runs DIR"),
    (errno.EIO, "check the disk, or pass --runs DIR elsewhere"),
])
def test_write_advice_names_the_option(code, text):
    assert files.write_advice(OSError(code, os.strerror(code)), "--runs DIR") == text
    assert files.write_advice(OSError(code, os.strerror(code)), "--cache DIR") == text.replace("--runs", "--cache")


def test_sha256_file_over_several_chunks(tmp_path):
    data = os.urandom(files._HASH_CHUNK * 2 + 123)
    (tmp_path / "f").write_bytes(data)
    assert files.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_write_json_is_indented_with_a_final_newline(tmp_path):
    obj = {"b": [1, 2], "a": "é"}
    files.write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert text == json.dumps(obj, indent=1) + "\n" and json.loads(text) == obj
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left
