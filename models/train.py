"""One training loop for every model of the report, the splits, the run folders and top-k accuracy.

``run(model, cache_dir, runs_root, ...)`` trains one model on one split of a feature cache (written by
``python -m features``) and leaves a run folder ``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<k>/``::

    config.json          model, split, preset, seed, settings, data identity, versions, results
    history.csv          epoch, train_loss, train_acc, val_acc, seconds (torch models)
    history_final.csv    the retrain on train+val, when the model is "final model on train+val"
    model.pt             torch state_dict (loads with weights_only=True); the SVM writes svm.npz
    predictions.npz      probs (torch) or scores (SVM) (n_test, 10) float32, labels, files, classes
    COMPLETE             written last: the run finished

Every file is written atomically. While training, ``checkpoint.pt`` (weights, optimizer and RNG state,
history) is rewritten after each epoch, so an interrupted run resumes where it stopped and ends with the
same numbers as an uninterrupted one; it is removed once COMPLETE is written. A complete run is
skipped unless ``force``; one made with other settings or another build of the cache (its
``identity`` in config.json differs) is retrained.

Reproducibility: the splits depend only on (track ids, labels, seed); the shuffle of epoch e is drawn
from ``default_rng([seed, phase, e])``; torch is seeded before each model is built and runs with
``torch.use_deterministic_algorithms(True)``. Same seed, machine and thread count -> same numbers.

CPU speed without changing any model (bench/bench_train.py): batches are copied once out of the
memory-mapped cache; denormal floats are flushed to zero; cnn2d runs channels_last; evaluation runs
under ``torch.inference_mode``; torch uses every core.
"""

import csv
import dataclasses
import importlib
import io
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

# cuBLAS is only deterministic with a fixed workspace; the variable must be set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402  (after the environment variable above)

from features import atomic_write  # noqa: E402
from features.cache import open_cache  # noqa: E402

from . import MODELS, REPORTED, top_k_accuracy  # noqa: E402
from .hparams import PRESETS, SPLITS, Hparams  # noqa: E402,F401  (re-exported)

VARIANTS = {"svm400": "svm"}  # extra run names -> the model file they use (the report's SVM on img400)
STURM_DIR = Path(__file__).resolve().parent / "sturm_filtered"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "seconds")


class TrainError(Exception):
    """A problem with the inputs of a run, described in one line that names the file."""


def track_id(relpath: str) -> str:
    """Track id of a clip path: its file stem (``blues/blues.00000.wav`` -> ``blues.00000``)."""
    return Path(relpath).stem


def split_indices(track_ids, labels, split: str, seed: int = 0, lists_dir=STURM_DIR) -> dict:
    """Row indices of the train, validation and test clips of a split.

    ``r70`` and ``r80`` are stratified: within each class, clips are ordered by track id and shuffled
    with ``default_rng(seed)``; the first ``round(0.2 n_c)`` are test, for ``r70`` the next
    ``round(0.1 n_c)`` are validation (halves round up; 70/10/20 of GTZAN's 100 per class), the rest
    train. ``r80`` has the same test set and trains on the rest (``r70``'s train + val). The split
    depends only on the set of
    (track id, label) pairs, not on their order, so a cache and a CSV of the same clips agree.
    ``filtered``: the artist-filtered lists (train, valid, test) matched by track id; clips in no list
    are left out.

    Parameters
    ----------
    track_ids : sequence of str, length n
    labels : array of int, shape (n,)
    split : str
        ``"r70"``, ``"r80"`` or ``"filtered"``.
    seed : int
    lists_dir : path
        Folder of ``{train,valid,test}_filtered.txt`` (``filtered`` only).

    Returns
    -------
    dict of str -> np.ndarray of int64
        ``"train"``, ``"val"`` (empty for ``r80``), ``"test"``: sorted row indices, disjoint.
    """
    track_ids, labels = list(track_ids), np.asarray(labels)
    if len(set(track_ids)) != len(track_ids):
        raise TrainError("split: duplicate track ids in the data")
    if split == "filtered":
        where = {}
        for part, name in (("train", "train"), ("val", "valid"), ("test", "test")):
            path = Path(lists_dir) / f"{name}_filtered.txt"
            try:
                where.update((track_id(line), part) for line in path.read_text().split())
            except FileNotFoundError:
                raise TrainError(f"{path}: missing split list") from None
        parts = {p: [i for i, t in enumerate(track_ids) if where.get(t) == p] for p in ("train", "val", "test")}
        return {p: np.array(v, dtype=np.int64) for p, v in parts.items()}
    if split not in ("r70", "r80"):
        raise TrainError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        members = sorted(np.flatnonzero(labels == c), key=lambda i: track_ids[i])
        members = [members[i] for i in rng.permutation(len(members))]
        n_test, n_val = int(0.2 * len(members) + 0.5), int(0.1 * len(members) + 0.5)  # half rounds up
        parts["test"] += members[:n_test]
        if split == "r70":
            parts["val"] += members[n_test:n_test + n_val]
            parts["train"] += members[n_test + n_val:]
        else:
            parts["train"] += members[n_test:]
    return {p: np.sort(np.array(v, dtype=np.int64)) for p, v in parts.items()}


def load_model(name: str):
    """The model file ``models/<name>.py`` (or the file a variant such as ``svm400`` uses)."""
    if name not in MODELS and name not in VARIANTS:
        raise TrainError(f"unknown model {name!r}; choose from {', '.join(MODELS + tuple(VARIANTS))}")
    return importlib.import_module(f"models.{VARIANTS.get(name, name)}")


def settings(name: str, preset: str):
    """The model's settings (its ``HPARAMS``) with the preset's overrides (its ``PRESETS[preset]``)."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    module = load_model(name)
    base = module.VARIANT_HPARAMS[name] if name in VARIANTS else module.HPARAMS
    return module, dataclasses.replace(base, **module.PRESETS.get(preset, {}))


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_preset() -> str:
    """``report`` (the report's full protocol) on a GPU, ``quick`` on a CPU."""
    return "report" if torch.cuda.is_available() else "quick"


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def _write_history(path: Path, rows) -> None:
    out = io.StringIO()
    w = csv.DictWriter(out, HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(out.getvalue().encode()))


def _versions() -> dict:
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Split(NamedTuple):
    """What a run trains on: ``train`` (+ curves on ``val``), retrained on ``train + val`` if ``final``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    final: bool


def plan(parts: dict, hp, split: str) -> Split:
    """Apply a model's protocol to the parts of ``split``.

    On ``filtered``, a model that uses no validation set (the report's ``r80`` models) trains on
    train+valid. On ``r70`` every model trains on the 70 % (with validation curves for torch models).
    """
    train, val, test = parts["train"], parts["val"], parts["test"]
    if split == "filtered" and hp.split == "r80":
        train, val = np.sort(np.concatenate([train, val])), val[:0]
    return Split(train, val, test, bool(getattr(hp, "final_on_trainval", False) and len(val)))


def _read(arr, idx, scale, hp, transform) -> torch.Tensor:
    """One batch out of the memmap (one copy), as the model's input tensor on the CPU."""
    x = arr[idx] if hp.crop is None else arr[idx, :hp.crop]
    if scale is not None:
        x = x * np.float32(scale)
    return transform(x)


def _log_probs(out: torch.Tensor, loss: str) -> torch.Tensor:
    return out if loss == "nll" else torch.log_softmax(out, dim=1)


def _nll(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # gather rather than F.nll_loss: CUDA's nll_loss has no deterministic implementation.
    return -log_probs.gather(1, y[:, None]).mean()


def predict(net, arr, idx, scale, hp, transform, device) -> np.ndarray:
    """Class probabilities, shape (len(idx), 10) float32, of the clips ``idx`` (in that order)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(idx), hp.batch_size):
            x = _read(arr, idx[start:start + hp.batch_size], scale, hp, transform).to(device)
            out.append(_log_probs(net(x), hp.loss).exp().float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 10), np.float32)


def train_epoch(net, opt, arr, labels, order, scale, hp, transform, device) -> tuple:
    """One pass over ``order`` in batches; returns (mean batch loss, mean batch accuracy).

    The means are over batches (unweighted), as the report's loops printed the running accuracy; the
    last batch may be smaller. Each batch is read in sorted row order (sequential memmap access).
    """
    net.train()
    losses, accs = [], []
    for start in range(0, len(order), hp.batch_size):
        idx = np.sort(order[start:start + hp.batch_size])
        x = _read(arr, idx, scale, hp, transform).to(device, non_blocking=True)
        y = torch.from_numpy(labels[idx]).to(device, non_blocking=True)
        log_probs = _log_probs(net(x), hp.loss)
        loss = _nll(log_probs, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append((log_probs.argmax(1) == y).float().mean().item())
    return float(np.mean(losses)), float(np.mean(accs))


def _new_model(module, hp, seed, device):
    torch.manual_seed(seed)
    net, transform = module.build()
    net = net.to(device)
    if hp.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt_class = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[hp.optimizer]
    return net, transform, opt_class(net.parameters(), lr=hp.lr)


def _rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _train_torch(module, hp, data, split: Split, run_dir, identity, seed, device, log, label) -> tuple:
    """Both phases of a torch model's protocol, resumable; returns (test probs, "probs", results)."""
    arr = data.array(hp.view)
    scale = data.manifest.get(hp.view, {}).get("scale") if arr.dtype.kind == "i" else None
    labels = data.labels
    ckpt_path = run_dir / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["identity"] != identity:
            log(f"{label}: checkpoint is from other settings or data; starting over")
            state = None
        else:
            log(f"{label}: resuming the {state['phase']} phase after epoch {state['epoch']}")
    history = state["history"] if state else []
    history_final = state["history_final"] if state else []
    main_stopped = state["main_stopped"] if state else False
    t_start, earlier = time.perf_counter(), state["seconds"] if state else 0.0  # time before a resume

    def phase_loop(phase, rows, train_idx, val_idx, max_epochs, stop_acc):
        nonlocal main_stopped
        net, transform, opt = _new_model(module, hp, seed, device)
        start, stopped = 0, False
        if state and state["phase"] == phase:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            _set_rng_state(state["rng"], device)
            start, stopped = state["epoch"], state["stopped"]
        epoch = start
        while epoch < max_epochs and not stopped:
            epoch += 1
            t0 = time.perf_counter()
            order = np.random.default_rng([seed, phase == "final", epoch]).permutation(train_idx)
            loss, acc = train_epoch(net, opt, arr, labels, order, scale, hp, transform, device)
            val_acc = ""
            if len(val_idx):
                probs = predict(net, arr, val_idx, scale, hp, transform, device)
                val_acc = round(top_k_accuracy(labels[val_idx], probs, 1), 4)
            rows.append({"epoch": epoch, "train_loss": round(loss, 5), "train_acc": round(acc, 4),
                         "val_acc": val_acc, "seconds": round(time.perf_counter() - t0, 2)})
            stopped = stop_acc is not None and acc > stop_acc
            if phase == "main":
                main_stopped = stopped
            payload = {"identity": identity, "phase": phase, "epoch": epoch, "stopped": stopped,
                       "main_stopped": main_stopped, "history": history, "history_final": history_final,
                       "model": net.state_dict(), "optimizer": opt.state_dict(), "rng": _rng_state(device),
                       "seconds": earlier + time.perf_counter() - t_start}
            atomic_write(ckpt_path, lambda f: torch.save(payload, f))
            _write_history(run_dir / ("history.csv" if phase == "main" else "history_final.csv"), rows)
            log(f"{label} {'retrain ' if phase == 'final' else ''}epoch {epoch}/{max_epochs}: "
                f"loss {loss:.4f}  train_acc {acc:.3f}"
                + (f"  val_acc {val_acc:.3f}" if val_acc != "" else "")
                + f"  ({rows[-1]['seconds']:.1f} s)")
        return net, transform

    if not (state and state["phase"] == "final"):
        net, transform = phase_loop("main", history, split.train, split.val, hp.max_epochs, hp.stop_acc)
    results = {"epochs_run": len(history), "stopped_early": main_stopped, "seconds_before_resume": earlier}
    if split.final:
        # the report's "final model on train+val": same initialisation, E = the epochs just run
        results["final_epochs"] = len(history)
        net, transform = phase_loop("final", history_final, np.sort(np.concatenate([split.train, split.val])),
                                    split.val[:0], len(history), None)
    probs = predict(net, arr, split.test, scale, hp, transform, device)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda f: torch.save(state_dict, f))
    results["n_params"] = sum(p.numel() for p in net.parameters())
    return probs, "probs", results


def _train_svm(module, hp, data, split: Split, run_dir, log, label) -> tuple:
    arr = data.array(hp.view)
    t0 = time.perf_counter()
    params = module.fit(arr[split.train], data.labels[split.train], hp, n_classes=len(data.classes))
    log(f"{label}: fitted on {len(split.train)} clips, {len(params['support_vectors'])} support vectors "
        f"({time.perf_counter() - t0:.1f} s)")
    module.save(run_dir / "svm.npz", params)
    scores = module.decision_scores(params, arr[split.test])
    return scores, "scores", {"n_support_vectors": int(len(params["support_vectors"]))}


def run_dir_for(runs_root, data_name: str, model: str, split: str, preset: str, seed: int) -> Path:
    """``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<seed>``."""
    return Path(runs_root) / data_name / model / f"{split}-{preset}-seed{seed}"


def run(model: str, cache_dir, runs_root="runs", split: str = None, preset: str = "quick", seed: int = 0,
        threads: int = None, force: bool = False, device=None, log=print) -> dict:
    """Train and test one model on one split; skip it when its run folder is already complete.

    Parameters
    ----------
    model : str
        A name from ``models.MODELS`` (or ``svm400``).
    cache_dir : path
        A feature cache folder (``cache/<data_name>``).
    runs_root : path
    split : str, optional
        ``r70``, ``r80`` or ``filtered``; default: the split the report used for this model.
    preset : str
        ``report`` (the report's settings), ``quick`` (CPU-sized, see each model file) or ``tiny``.
    seed : int
    threads : int, optional
        Torch CPU threads; default all cores.
    force : bool
        Retrain even when a complete run exists.
    device : torch.device, optional
        Default: CUDA when available.
    log : callable
        Receives one line per epoch and per event.

    Returns
    -------
    dict
        The run's ``config.json`` content (results under ``"test"``), plus ``run_dir`` and ``skipped``.
    """
    module, hp = settings(model, preset)
    split = split or hp.split
    data = open_cache(cache_dir)
    data_name = data.manifest.get("data_name", data.root.name)
    parts = split_indices([track_id(f) for f in data.files], data.labels, split, seed)
    sp = plan(parts, hp, split)
    if not len(sp.train) or not len(sp.test):
        raise TrainError(f"{data.root}: split {split} of {len(data.labels)} clips leaves "
                         f"{len(sp.train)} to train on and {len(sp.test)} to test")
    run_dir = run_dir_for(runs_root, data_name, model, split, preset, seed)
    identity = {"model": model, "split": split, "preset": preset, "seed": seed,
                "hparams": dataclasses.asdict(hp),
                "data": {k: data.manifest.get(k) for k in ("data_name", "config_hash", "data_identity", "n")}}
    label = f"{model} {split}-{preset}-seed{seed}"
    if (run_dir / "COMPLETE").exists() and not force:
        config = json.loads((run_dir / "config.json").read_text())
        if config.get("identity") == identity:
            log(f"{label}: complete in {run_dir}; skipped (--force retrains)")
            return {**config, "run_dir": str(run_dir), "skipped": True}
        log(f"{label}: {run_dir} is from other settings or data; retraining")
        force = True
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    device = torch.device(device) if device is not None else default_device()
    threads = threads or len(os.sched_getaffinity(0))
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

    t0 = time.perf_counter()
    if isinstance(hp, Hparams):
        scores, key, results = _train_torch(module, hp, data, sp, run_dir, identity, seed, device, log, label)
    else:
        scores, key, results = _train_svm(module, hp, data, sp, run_dir, log, label)
    test_labels = data.labels[sp.test]
    top = {f"top{k}": round(top_k_accuracy(test_labels, scores, k), 4) for k in (1, 2, 3)}
    atomic_write(run_dir / "predictions.npz", lambda f: np.savez(
        f, **{key: scores.astype(np.float32)}, labels=test_labels,
        files=np.array([data.files[i] for i in sp.test]), classes=np.array(data.classes)))
    config = {
        "identity": identity, "model": model, "split": split, "preset": preset, "seed": seed,
        "hparams": dataclasses.asdict(hp),
        "data": {"data_name": data_name, "data_root": data.manifest.get("data_root"),
                 "cache_dir": str(data.root), "config_hash": data.manifest.get("config_hash"),
                 "n": len(data.labels)},
        "versions": _versions(), "device": str(device), "threads": threads,
        "n_train": int(len(sp.train)), "n_val": int(len(sp.val)), "n_test": int(len(sp.test)),
        **results, "test": top, "reported": REPORTED.get((model, split)),
        "wall_seconds": round(time.perf_counter() - t0 + results.get("seconds_before_resume", 0.0), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(run_dir / "config.json", config)
    atomic_write(run_dir / "COMPLETE", lambda f: f.write(b""))
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    log(f"{label}: test top-1 {top['top1']:.3f}  top-2 {top['top2']:.3f}  top-3 {top['top3']:.3f}  "
        f"({config['wall_seconds']:.0f} s) -> {run_dir}")
    return {**config, "run_dir": str(run_dir), "skipped": False}
