"""One training run of any model: ``run(model, cache_dir, runs_root, ...)``.

It opens the feature cache (written by ``python -m features``), takes the model's split
(``models.splits``), claims the run folder from the run store (``models.runs``: a complete run of the
same identity is reused, an interrupted one resumes, a second process waits for the first), has the
model's family (``models.family``) fit it, writes the test predictions and ``config.json`` and seals
the run. The folder's files are described in ``models/runs.py``; the torch networks' epoch loop, its
checkpoint and resume in ``models/loop.py``.

A run's identity is what decides its result: its settings and the fingerprints of the arrays its
model reads, so a change to the image code retrains the image models, not ``cnn1d_raw``.

Reproducibility: the splits depend only on (track ids, labels, seed); torch is seeded before each
model is built and runs with ``torch.use_deterministic_algorithms(True)``. Same seed, machine and
thread count -> same numbers. Denormal floats are flushed to zero; torch uses every usable core.
"""

import dataclasses
import hashlib
import importlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np

# cuBLAS is only deterministic with a fixed workspace; the variable must be set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402  (after the environment variable above)

from features import usable_cpus, versions  # noqa: E402
from features.cache import feature_record, open_cache  # noqa: E402
from features.dataset import track_id  # noqa: E402

from . import REGISTRY, REPORTED, top_k_accuracy  # noqa: E402
from . import runs  # noqa: E402
from .family import Job, family_of  # noqa: E402
from .hparams import PRESETS  # noqa: E402
from .splits import TrainError, plan, split_indices  # noqa: E402


def load_model(name: str):
    """The model file of model ``name`` (``models.REGISTRY``)."""
    if name not in REGISTRY:
        raise TrainError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name][0])


def settings(name: str, preset: str):
    """The model's settings (its ``HPARAMS``) with the preset's overrides (its ``PRESETS[preset]``)."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    module = load_model(name)
    return module, dataclasses.replace(module.HPARAMS, **module.PRESETS.get(preset, {}))


def inputs(name: str, hp) -> tuple:
    """The cache arrays model ``name`` with settings ``hp`` reads (besides ``labels``)."""
    return family_of(name).inputs(hp)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_preset() -> str:
    """``report`` (the report's full protocol) on a GPU, ``quick`` on a CPU."""
    return "report" if torch.cuda.is_available() else "quick"


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_identity(model: str, split: str, preset: str, seed: int, hp, data) -> dict:
    """What decides a run's result, in the JSON form it is stored in (``runs.canonical``): its settings
    and the fingerprints of the arrays its model reads."""
    return runs.canonical({
        "model": model, "split": split, "preset": preset, "seed": seed, "hparams": dataclasses.asdict(hp),
        "data_name": data.manifest.get("data_name", data.root.name),
        "inputs": {name: data.fingerprint(name) for name in ("labels",) + inputs(model, hp)}})


def _set_up_torch(threads, device, seed):
    device = torch.device(device) if device is not None else default_device()
    threads = threads or usable_cpus()
    torch.set_num_threads(threads)
    # Backward passes through the LSTM's 400 steps and the long 1-D convolutions produce gradients
    # below 1e-38; computing on such denormal floats made CPU epochs up to 20x slower. Flushing them
    # to zero changes no result that matters.
    torch.set_flush_denormal(True)
    seed_everything(seed)
    # CUDA's warn-only mode: a kernel without a deterministic version warns instead of stopping a
    # GPU run; on the CPU every op used here is deterministic and an error would be a real bug.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    return device, threads


def run(model: str, cache_dir, runs_root="runs", split: str = None, preset: str = "quick", seed: int = 0,
        threads: int = None, force: bool = False, device=None, log=print) -> dict:
    """Train (and test, unless the split is ``all``) one model on one split; skip it when already complete.

    Parameters
    ----------
    model : str
        A name from ``models.REGISTRY``.
    cache_dir : path
        A feature cache folder (``cache/<data_name>``) holding the arrays the model reads.
    runs_root : path
    split : str, optional
        ``r70``, ``r80``, ``filtered``, ``all`` or ``k<K>f<i>``; default: the split of the model's source.
    preset : str
        ``report`` (the source's settings), ``quick`` (CPU-sized, see each model file) or ``tiny``.
    seed : int
    threads : int, optional
        Torch CPU threads; default all usable cores.
    force : bool
        Retrain even when a complete run exists.
    device : torch.device, optional
        Default: CUDA when available.
    log : callable
        Receives one line per epoch and per event.

    Returns
    -------
    dict
        The run's ``config.json`` content (results under ``"test"``, None for ``all``), plus
        ``run_dir`` and ``skipped``.
    """
    module, hp = settings(model, preset)
    split = split or hp.split
    data = open_cache(cache_dir)
    data_name = data.manifest.get("data_name", data.root.name)
    parts = split_indices([track_id(f) for f in data.files], data.labels, split, seed)
    sp = plan(parts, hp, split)
    if not len(sp.train) or (split != "all" and not len(sp.test)):
        raise TrainError(f"{data.root}: split {split} of {len(data.labels)} clips leaves "
                         f"{len(sp.train)} to train on and {len(sp.test)} to test")
    run_dir = runs.run_dir_for(runs_root, data_name, model, split, preset, seed)
    identity = run_identity(model, split, preset, seed, hp, data)
    label = f"{model} {split}-{preset}-seed{seed}"
    with runs.claim(run_dir, identity, force, log, label) as found:
        if found.config is not None:
            return {**found.config, "run_dir": str(run_dir), "skipped": True}
        job = Job(data, sp, found.work, identity, seed, None, log, label)
        config = _train_and_test(module, hp, job, threads, device)
        runs.commit(run_dir, found.work)
    top = config["test"]
    log(f"{label}: " + (f"test top-1 {top['top1']:.3f}  top-2 {top['top2']:.3f}  top-3 {top['top3']:.3f}"
                        if top else f"trained on all {config['n_train']} clips (nothing tested)")
        + f"  ({config['wall_seconds']:.0f} s) -> {run_dir}")
    return {**config, "run_dir": str(run_dir), "skipped": False}


def _train_and_test(module, hp, job: Job, threads, device) -> dict:
    """Fit one run in its prepared folder ``job.run_dir`` (the run's own, or a forced retrain's
    temporary one), holding the run's lock; test it, write its files and seal it; returns its config."""
    device, threads = _set_up_torch(threads, device, job.seed)
    job = job._replace(device=device)
    family, data, sp, identity = family_of(job.identity["model"]), job.data, job.split, job.identity
    t0 = time.perf_counter()
    fitted = family.fit(module, hp, job)
    top = None
    if len(sp.test):
        test_labels = data.labels[sp.test]
        top = {f"top{k}": round(top_k_accuracy(test_labels, fitted.scores, k), 4) for k in (1, 2, 3)}
        runs.write_predictions(job.run_dir, family.key, fitted.scores, test_labels,
                               [data.files[i] for i in sp.test], data.classes)
    data_name = identity["data_name"]
    config = runs.RunConfig(
        identity=identity, classes=list(data.classes), features=feature_record(hp.view, data.manifest),
        data={"data_name": data_name, "data_root": data.manifest.get("data_root"),
              "cache_dir": str(Path(data.root).resolve()), "n": len(data.labels),
              "synthetic": data_name == "synthetic", "config_hash": _input_hash(identity["inputs"])},
        versions=versions(torch="torch", numpy="numpy", **{"scikit-learn": "sklearn"}), device=str(device), threads=threads,
        n_train=int(len(sp.train)), n_val=int(len(sp.val)), n_test=int(len(sp.test)), results=fitted.results,
        test=top, reported=REPORTED.get((identity["model"], identity["split"])),
        wall_seconds=round(time.perf_counter() - t0 + fitted.results.get("seconds_before_resume", 0.0), 1),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), files=list(family.files(hp)))
    written = runs.write_config(job.run_dir, config)
    runs.seal(job.run_dir, config.files)  # COMPLETE, last: the sha256 of every file above
    (job.run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return written


def _input_hash(fingerprints: dict) -> str:
    """One hash of a run's input fingerprints: runs that read the same features share it."""
    return hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:16]
