"""The Ray engine under ``predict.py --engine ray``: the local engine's per-batch function on a Ray cluster.

Ray Data spreads the files over a pool of actors, each holding one ``models.engine.Classifier``
(the model loaded once per actor) and running its ``__call__`` on batches of paths, so every record
is the one the local engine (``models.engine.classify``) gives. The pool is sized from the cluster:
one actor per ``CPUS_PER_ACTOR`` cores, or one per GPU where the model runs on CUDA.

Where things are: each worker opens the paths it is given and the run folders of the ``Spec`` by
their names, so on a cluster of several machines the audio, the runs and ``out_dir`` must be on a
filesystem they share, at the same paths, and every node needs this project's requirements (the
code itself is shipped to a cluster this module connects to, as Ray ``py_modules``).

``classify`` streams the records back to the driver in the order of the paths. With ``out_dir`` the
workers write them instead, as shards of ``--out`` lines (``<out_dir>/*.jsonl``: each line a record
and its resume ``key``, as ``models.resultlog`` writes them); a rerun skips the files whose line is
in a shard (``done_in``), so a killed run resumes. Ray is optional (``make cluster``): this module
imports it only when called.
"""

import json
import logging
import os
import re
import socket
import warnings
from pathlib import Path

from features import usable_cpus

from .engine import Classifier
from .inference import UsageError
from .resultlog import read_lines, file_key

RAY_MISSING = ("the Ray engine needs Ray, which is not installed: `make cluster` "
               "(= .venv/bin/pip install -r requirements-cluster.txt)")
# Files per actor call (bench/bench_cluster.py, 2 cores): at 4, Ray's cost per call adds half again to a
# cheap model's 11 ms a file (the SVM); at 16, actors of a small job sit idle while the last batches run.
BATCH_SIZE = 8
CPUS_PER_ACTOR = 1  # one process per core: each scores while its thread prepares the next file
SHARD_SUFFIX = ".jsonl"
CONNECT_TIMEOUT_S = 10.0
REPO = Path(__file__).resolve().parents[1]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of Ray's worker names


class ClusterError(Exception):
    """Ray could not run the job (a worker died, the cluster went away): one line."""


def require_ray():
    """The ``ray`` module; UsageError ``RAY_MISSING`` when it is not installed."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def classify(spec, paths, address=None, batch_size: int = BATCH_SIZE, out_dir=None):
    """Classify ``paths`` on Ray with the model ``spec`` names, as ``models.engine.classify`` does.

    Parameters
    ----------
    spec : models.engine.Spec
        The model; each actor loads it once.
    paths : iterable of Path
        The files, read by the workers at these names.
    address : str, optional
        None: start a local Ray on this process's usable cores (shut down at the end); ``"auto"`` (the
        cluster this machine is a node of) or ``"HOST:PORT"`` (its head's GCS): join that cluster as
        a driver (left running). Not ``"ray://..."``: Ray Data does not run through Ray Client; run
        the driver on a node (or as a job, ``ray job submit -- python predict.py ...``). A Ray this
        process already initialised is used as it is and left running.
    batch_size : int
        Files per actor call.
    out_dir : str or Path, optional
        Have the workers write the records as shards ``<out_dir>/*.jsonl`` of ``--out`` lines (see
        ``done_in``) instead of sending them to the driver, beside any earlier shards; they are
        written before this returns. ``out_dir`` must be a folder every worker writes to (shared).

    Returns
    -------
    iterator of (Path, dict)
        Each file and its record, in the order of ``paths``, as they come (the job runs as it is
        consumed); empty with ``out_dir``.

    Raises
    ------
    UsageError
        Ray is not installed, ``address`` is a Ray Client one or cannot be reached, or the cluster
        has no GPU for ``spec.device``.
    ClusterError
        Ray failed while running (while iterating, without ``out_dir``).
    """
    ray = require_ray()
    if str(address).startswith("ray://"):
        raise UsageError(f"--address {address}: Ray Data does not run through Ray Client; run predict.py "
                         f"on a node of the cluster with --address auto (e.g. `ray job submit -- python "
                         f"predict.py ...`)")
    paths = list(paths)
    if not paths:  # nothing to start Ray for
        return iter(())
    if out_dir is None:
        return _stream(ray, spec, paths, address, batch_size)
    with _Session(ray, address):
        try:
            _mapped(ray, spec, paths, batch_size, _Lines).write_datasink(_shard_sink(str(out_dir)))
        except ray.exceptions.RayError as err:
            raise _failure(err) from None
    return iter(())


def done_in(out_dir) -> dict:
    """The files the shards of ``out_dir`` answer: ``{done_key(file, key): whether its lines are all
    errors}`` (empty when there is no such folder).

    A rerun leaves out each file whose ``done_key(display(path), file_key(path, model_id))`` is here
    (and, to retry errors, is False): the name and key of ``--out``, so a file changed since, or
    another model, is classified again, a new line in a new shard beside the old one, which keeps its
    old key; an error retried that now succeeds counts as answered. A shard's torn last line (a killed
    worker) is left out, so its file is done again.

    Raises
    ------
    models.resultlog.ResultLogError
        A shard cannot be read or is not ours (one line naming it).
    """
    shards = sorted(Path(out_dir).glob(f"*{SHARD_SUFFIX}")) if Path(out_dir).is_dir() else []
    done = {}
    for line in (o for shard in shards for o in read_lines(shard)[0]):
        key = done_key(line["file"], line["key"])
        done[key] = done.get(key, True) and "error" in line
    return done


def done_key(name: str, key: dict) -> tuple:
    """A file's entry in ``done_in``: its displayed name and resume key, hashable."""
    return name, json.dumps(key, sort_keys=True)


def _stream(ray, spec, paths: list, address, batch_size: int):
    with _Session(ray, address):
        try:
            for path, row in zip(paths, _mapped(ray, spec, paths, batch_size, Classifier).iter_rows()):
                yield path, json.loads(row["record"])
        except ray.exceptions.RayError as err:
            raise _failure(err) from None


class _Session:
    """Ray connected (and quiet) inside ``with``: started locally or joined; one it started is shut down."""

    def __init__(self, ray, address):
        self.ray, self.address, self.started = ray, address, False

    def __enter__(self):
        if not self.ray.is_initialized():
            self._init()
        _quiet_data()
        return self

    def _init(self) -> None:
        # the workers' own output stays in Ray's session logs: predict's stderr is one line per file
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False}
        try:
            if self.address is None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local run reports nowhere
                # "local": a new instance, even where `ray start` runs one that ray.init() would join
                self.ray.init(address="local", num_cpus=usable_cpus(), **quiet)
                self.started = True
            else:
                _reachable(self.address)
                code = [str(REPO / "features"), str(REPO / "models")]
                self.ray.init(address=self.address, **quiet,
                              runtime_env={"py_modules": code, "excludes": ["__pycache__"]})
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = self.address or "a new local instance"
            raise UsageError(f"cannot start or reach Ray at {where}: {_first_line(err)}") from None

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()


def _reachable(address: str) -> None:
    """UsageError unless ``HOST:PORT`` accepts a connection: Ray itself retries a wrong address for
    minutes, a warning a second."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray reads itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UsageError(f"cannot reach Ray at {address}: {err.strerror or err}") from None


def _quiet_data() -> None:
    """Ray Data without progress bars or its own lines on stderr (its log file keeps them: a failure
    is said in one line by ``_failure``), the order of the rows kept."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)


def _mapped(ray, spec, paths: list, batch_size: int, worker):
    """The dataset of ``worker(spec)`` applied to ``paths`` by an actor pool sized from the cluster.

    An actor that dies fails the job (a ClusterError; a rerun with ``--out`` or ``out_dir`` goes on
    from there) rather than being restarted: Ray Data's default retries forever, and a file that
    kills its worker (a decoder crash, a file too big for memory) would kill every restart too.
    """
    spec, size, resources = _actors(ray.cluster_resources(), spec)
    size = min(size, -(-len(paths) // batch_size))  # no actor without a batch to run (Ray warns of one)
    items = ray.data.from_items([{"path": str(p)} for p in paths])
    with warnings.catch_warnings():
        # Ray Data 2.60 names no parameter for max_restarts yet and warns of the keyword it takes
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return items.map_batches(worker, fn_constructor_args=(spec,), batch_size=batch_size, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=size), max_restarts=0, **resources)


def _actors(resources: dict, spec) -> tuple:
    """(spec for the actors, pool size, each actor's resources) on a cluster with ``resources``.

    One actor per GPU where the model runs on CUDA (``spec.device`` cuda, or auto on a cluster with
    GPUs), else one per ``CPUS_PER_ACTOR`` cores, the model on the CPU.
    """
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if spec.device == "cuda" and not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
    if spec.device != "cpu" and gpus:
        return spec, gpus, {"num_gpus": 1, "num_cpus": max(1, cpus // gpus)}
    return spec._replace(device="cpu"), max(1, cpus // CPUS_PER_ACTOR), {"num_cpus": CPUS_PER_ACTOR}


class _Lines(Classifier):
    """The local engine's per-batch function, each record made its ``--out`` line: the record (its
    warnings kept, since no one else sees them) and its resume key, taken on the worker as predict
    takes it."""

    def __call__(self, batch: dict) -> dict:
        out = super().__call__(batch)
        return {"line": [json.dumps({**json.loads(record), "key": file_key(path, self.model_id)})
                         for path, record in zip(out["path"], out["record"])]}


def _shard_sink(out_dir: str):
    """A Ray datasink writing each block's ``line`` column, a line each, as one shard in ``out_dir``."""
    from ray.data.datasource import BlockBasedFileDatasink

    class Shards(BlockBasedFileDatasink):
        def write_block_to_file(self, block, file) -> None:
            lines = block.to_arrow().column("line").to_pylist()
            file.write("".join(line + "\n" for line in lines).encode())

    return Shards(out_dir, file_format=SHARD_SUFFIX[1:])


def _failure(err) -> Exception:
    """A Ray failure as one line: the last line of the worker's traceback that Ray's message ends with
    (a UsageError, such as a run the worker cannot load, as itself)."""
    lines = _ANSI.sub("", str(err)).strip().splitlines() or [type(err).__name__]
    name, _, text = lines[-1].partition(": ")
    if name == f"{UsageError.__module__}.{UsageError.__name__}":
        return UsageError(text)
    return ClusterError(f"Ray failed: {lines[-1]} (the whole story: Ray's logs, /tmp/ray/session_latest/logs "
                        f"by default)")


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
