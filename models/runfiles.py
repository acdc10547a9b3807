"""Verifying reader of run folders, shared by ``run_all.py`` (via ``models.train``), ``evaluate.py`` and
``predict.py``; torch-free.

A finished run folder's ``COMPLETE``, written last, is a JSON object ``{file name: sha256 hex}`` of every
file the run wrote (``config.json``, ``history*.csv``, ``model.pt``, ``svm.npz`` or ``head.npz``, ``predictions.npz``).
``verify_run`` checks each listed file against its checksum, that the files the run must have are
listed, and the structure of ``config.json``. Every problem is a ``RunError``: one line naming the file
and the ``run_all.py`` command that repairs it.

An empty ``COMPLETE`` comes from a run made before checksums were recorded: ``verify_run`` reads it
unverified (``RunFiles.checksums`` is None; structure checks only); ``run_all.py`` retrains it.

``checkpoint.pt`` is not listed (it is removed once the run is complete); it carries its own checksum
instead, see ``seal_bytes``.
"""

import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

from features import atomic_write

from .hparams import RUN_DIR_RE

# The files a run writes, besides COMPLETE; any other entry of a run folder is none of ours.
RUN_FILES = ("config.json", "history.csv", "history_final.csv", "model.pt", "svm.npz", "head.npz", "predictions.npz")
HEX64 = re.compile(r"[0-9a-f]{64}")
# checkpoint.pt: this magic, the body's sha256 (32 bytes), the body (torch.save's bytes).
CHECKPOINT_MAGIC = b"gtzan-genre checkpoint 1\n"
_CHUNK = 1 << 22


class RunError(Exception):
    """A damaged or unfinished run folder.

    Attributes
    ----------
    path : Path
        The file (or folder) that failed a check.
    problem : str
        What is wrong with it.
    command : str
        The ``run_all.py`` command that repairs it.

    ``str()`` is one line: ``<path>: <problem> — to repair: <command>``.
    """

    def __init__(self, path, problem: str, command: str):
        self.path, self.problem, self.command = Path(path), problem, command
        super().__init__(f"{self.path}: {problem} — to repair: {command}")


class RunFiles(NamedTuple):
    """A run folder that passed ``verify_run``: its config and checksums (None: an unverified old run)."""

    path: Path
    config: dict
    checksums: dict


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB chunks: model weights run to tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def repair_command(run_dir, config=None, force: bool = True) -> str:
    """``python run_all.py --models M --split S --preset P --seed K [--data ROOT] [--force]`` for a run folder.

    The data folder comes from ``config`` (``data.data_root``) when it is given and records one.
    """
    run_dir = Path(run_dir)
    command = f"python run_all.py --models {run_dir.parent.name}"
    match = RUN_DIR_RE.match(run_dir.name)
    if match:
        command += f" --split {match['split']} --preset {match['preset']} --seed {int(match['seed'])}"
    data = (config or {}).get("data") if isinstance(config, dict) else None
    root = data.get("data_root") if isinstance(data, dict) else None
    command += f" --data {root}" if isinstance(root, str) and root else ""
    return command + (" --force" if force else "")


def seal(run_dir) -> dict:
    """Write ``COMPLETE``: the sha256 of every run file present in ``run_dir``; returns that mapping."""
    run_dir = Path(run_dir)
    checksums = {name: sha256_file(run_dir / name) for name in RUN_FILES if (run_dir / name).is_file()}
    atomic_write(run_dir / "COMPLETE", lambda f: f.write((json.dumps(checksums, indent=1) + "\n").encode()))
    return checksums


def verify_run(run_dir) -> RunFiles:
    """Check a finished run folder before any of its files is used.

    Parameters
    ----------
    run_dir : path
        ``<runs>/<data>/<model>/<split>-<preset>-seed<k>``.

    Returns
    -------
    RunFiles
        ``config`` (the parsed ``config.json``) and ``checksums`` (None for a run made before checksums
        were recorded: its files are then only structure-checked by whoever opens them).

    Raises
    ------
    RunError
        No ``COMPLETE``; ``COMPLETE`` is not a checksum list; a listed file is missing or its bytes
        differ from its checksum; a file the run must have is not listed, or a run file is present but
        not listed; ``config.json`` is not a run's config or names another run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "COMPLETE").is_file():
        raise RunError(run_dir, "no COMPLETE (unfinished or damaged run)", repair_command(run_dir, force=False))
    config = _read_config(run_dir)
    checksums = _read_checksums(run_dir, config)
    if checksums is not None:
        for name in _required(config, checksums):
            if name not in checksums:
                raise RunError(run_dir / "COMPLETE", f"does not list {name}", repair_command(run_dir, config))
        for name in RUN_FILES:
            if (run_dir / name).exists() and name not in checksums:
                raise RunError(run_dir / name, "not written by this run (not listed in COMPLETE)",
                               repair_command(run_dir, config))
        for name, digest in checksums.items():
            _check_file(run_dir / name, digest, config)
    return RunFiles(run_dir, config, checksums)


def _read_checksums(run_dir: Path, config) -> dict:
    """COMPLETE's {name: sha256}, or None when it is empty (a run made before checksums)."""
    path = run_dir / "COMPLETE"
    try:
        raw = path.read_bytes()
        if not raw:
            return None
        checksums = json.loads(raw)
    except (OSError, ValueError) as e:
        raise RunError(path, f"unreadable ({e.__class__.__name__})", repair_command(run_dir, config)) from None
    if not (isinstance(checksums, dict) and checksums and set(checksums) <= set(RUN_FILES)
            and all(isinstance(v, str) and HEX64.fullmatch(v) for v in checksums.values())):
        raise RunError(path, "not a list of run files and their sha256", repair_command(run_dir, config))
    return checksums


def _required(config: dict, checksums: dict) -> list:
    """The files a finished run of this config must have written."""
    weights = next((w for w in ("svm.npz", "head.npz") if w in checksums), "model.pt")
    required = ["config.json", weights] + (["history.csv"] if weights == "model.pt" else [])
    return required + (["predictions.npz"] if config.get("split") != "all" else [])


def _check_file(path: Path, digest: str, config: dict) -> None:
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise RunError(path, "missing", repair_command(path.parent, config)) from None
    except OSError as e:
        raise RunError(path, f"unreadable ({e.strerror or e.__class__.__name__})",
                       repair_command(path.parent, config)) from None
    if actual != digest:
        raise RunError(path, "damaged (its bytes differ from the sha256 recorded in COMPLETE)",
                       repair_command(path.parent, config))


def _read_config(run_dir: Path) -> dict:
    """``config.json`` as a dict, checked to be a run config of this folder."""
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        problem = "missing" if isinstance(e, FileNotFoundError) else f"cannot read JSON ({e.__class__.__name__})"
        raise RunError(path, problem, repair_command(run_dir)) from None
    if not isinstance(config, dict):
        raise RunError(path, "expected a JSON object", repair_command(run_dir))
    problem = _config_problem(run_dir, config)
    if problem:
        raise RunError(path, problem, repair_command(run_dir, config))
    return config


def _config_problem(run_dir: Path, config: dict):
    """What makes ``config`` not this folder's run config (None: nothing)."""
    match = RUN_DIR_RE.match(run_dir.name)
    expected = {"model": run_dir.parent.name}
    if match:
        expected.update(split=match["split"], preset=match["preset"], seed=int(match["seed"]))
    for key, value in expected.items():
        if key in config and config[key] != value:
            return f"{key} is {config[key]!r}, the folder says {value!r}"
    for key in ("data", "identity", "hparams", "features"):
        if not isinstance(config.get(key, {}), dict):
            return f"{key!r} is not an object"
    classes = config.get("classes", ["a", "b"])
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes)):
        return "'classes' is not a list of two or more distinct names"
    if not isinstance(config.get("test"), (dict, type(None))):
        return "'test' is not an object"
    return None


def seal_bytes(body: bytes) -> bytes:
    """``body`` with a magic line and its sha256 in front, for a file that is its own checksum record."""
    return CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body


def unseal_bytes(path) -> bytes:
    """The body of a file written with ``seal_bytes``; ValueError when it is not one or is damaged."""
    data = Path(path).read_bytes()
    head = len(CHECKPOINT_MAGIC)
    if not data.startswith(CHECKPOINT_MAGIC) or len(data) < head + 32:
        raise ValueError("not a checkpoint of this version")
    body = data[head + 32:]
    if hashlib.sha256(body).digest() != data[head:head + 32]:
        raise ValueError("damaged (its bytes differ from its sha256)")
    return body
