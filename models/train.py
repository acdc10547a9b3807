"""One training loop for every model, the splits, and the run folders.

``run(model, cache_dir, runs_root, ...)`` trains one model on one split of a feature cache (written by
``python -m features``) and leaves a run folder ``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<k>/``::

    config.json          identity (model, split, preset, seed, settings, fingerprints of the arrays it
                         read), classes, feature settings, versions, results
    history.csv          epoch, train_loss, train_acc, val_acc, test_acc_monitor, seconds (torch models)
    history_final.csv    the retrain on train+val, when the model is "final model on train+val"
    model.pt             torch state_dict (loads with weights_only=True); the SVM writes svm.npz
    predictions.npz      log_probs (torch) or scores (SVM) (n_test, n_classes) float32, labels, files,
                         classes; none for split ``all`` (nothing is tested)
    COMPLETE             written last: JSON {file: sha256} of the files above (``models.runfiles``)

Every file is written atomically. While training, ``checkpoint.pt`` (weights, optimizer, schedule and
RNG state, history; with its own sha256, ``runfiles.seal_bytes``) is rewritten after each epoch, after
the history, so a run interrupted or killed at any point resumes where it stopped and ends with the
same numbers as an uninterrupted one; it is removed once COMPLETE is written, and one that fails its
checksum or will not load is noted and the run starts over. A complete run that passes
``runfiles.verify_run`` is skipped unless ``force``; one whose identity differs (other settings, or a
changed fingerprint of an array its model reads: a change to the image code retrains the image models,
not ``cnn1d_raw``), that fails verification, or that has no checksums (made before they were recorded)
is retrained with a one-line note. A run is trained holding ``.<run>.lock`` beside its folder (flock):
a second process waits (saying so), then reuses the finished run. The holder knows no other process
writes the run, so it removes every temporary entry of the run, whatever the pid in its name (a
killed process may be an unreaped zombie), and other runs' entries beside it whose owner is gone.
``force`` retrains a readable run in ``.<run>.partial-<pid>`` and swaps it in once complete
(``features.replace_folder``): the old run stays readable until then, and a failed or killed
retrain leaves it (or, killed mid-swap, the new complete one) in place. A read-only runs folder
still serves its complete runs.

``test_acc_monitor`` is the test accuracy after each epoch of a run without a validation part (the
report's r80 models; its Figure 7 draws that curve). It is recorded for the figure only: no decision
(stopping, selection) ever reads it.

Reproducibility: the splits depend only on (track ids, labels, seed); the shuffle and a model's own
batch sampling in epoch e are drawn from ``default_rng([seed, phase, e])``; torch is seeded before each
model is built and runs with ``torch.use_deterministic_algorithms(True)``. Same seed, machine and
thread count -> same numbers.

A model file may supply, besides ``HPARAMS``, ``PRESETS`` and ``build(n_classes)``: ``train_batch``
(its own batch sampling and augmentation), ``set_normalisation`` (statistics from the training rows)
and ``clip_log_probs`` (clip-level prediction); ``models/best.py`` does.

CPU speed without changing any model (bench/bench_train.py): batches are copied once out of the
memory-mapped cache; denormal floats are flushed to zero; cnn2d runs channels_last; evaluation runs
under ``torch.inference_mode``; torch uses every usable core.
"""

import contextlib
import csv
import dataclasses
import errno
import fcntl
import hashlib
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

from features import (atomic_write, backbone, finish_replace, mel, remove_orphans, replace_folder,  # noqa: E402
                      temp_name, usable_cpus)
from features.cache import FeatureConfig, code_fingerprint, open_cache  # noqa: E402
from features.dataset import track_id  # noqa: E402

from . import REPORTED, RUN_NAMES, top_k_accuracy  # noqa: E402
from .hparams import FOLD_RE, PRESETS, SPLITS, Hparams, is_split  # noqa: E402
from .runfiles import RunError, seal, seal_bytes, unseal_bytes, verify_run  # noqa: E402

STURM_DIR = Path(__file__).resolve().parent / "sturm_filtered"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc_monitor", "seconds")
CHECKPOINT_KEYS = {"identity", "phase", "epoch", "stopped", "main_stopped", "history", "history_final", "model",
                   "optimizer", "schedule", "rng", "seconds"}
# A runs folder that refuses the lock file with one of these is read-only: its complete runs still serve.
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class TrainError(Exception):
    """A problem with the inputs of a run, described in one line that names the file."""


def _tracks_by_class(track_ids, labels) -> dict:
    """class -> {track id -> its rows}, checking that no track carries two labels."""
    rows, label_of = {}, {}
    for i, (t, c) in enumerate(zip(track_ids, labels)):
        if label_of.setdefault(t, c) != c:
            raise TrainError(f"split: track {t!r} has files under two labels")
        rows.setdefault(t, []).append(i)
    by_class = {}
    for t in sorted(rows):
        by_class.setdefault(label_of[t], {})[t] = rows[t]
    return {c: by_class[c] for c in sorted(by_class)}


def _filtered(track_ids, lists_dir) -> dict:
    where = {}
    for part, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        path = Path(lists_dir) / f"{name}_filtered.txt"
        try:
            where.update((track_id(line), part) for line in path.read_text().split())
        except FileNotFoundError:
            raise TrainError(f"{path}: missing split list") from None
    return {p: [i for i, t in enumerate(track_ids) if where.get(t) == p] for p in ("train", "val", "test")}


def split_indices(track_ids, labels, split: str, seed: int = 0, lists_dir=STURM_DIR) -> dict:
    """Row indices of the train, validation and test clips of a split, every track on one side.

    ``r70``/``r80``: within each class, its tracks (sorted by id) are shuffled with ``default_rng(seed)``;
    the first ``round(0.2 n_c)`` tracks are test, for ``r70`` the next ``round(0.1 n_c)`` validation
    (halves round up; 70/10/20 of GTZAN's 100 per class), the rest train; ``r80`` has the same test
    set and trains on the rest. ``k<K>f<i>``: the shuffled tracks are dealt into K folds in turn
    (class after class, so every fold is stratified); fold i is test, the others train.
    ``filtered``: the artist-filtered lists matched by track id (clips in no list are left out).
    ``all``: every clip trains. A track's files (a clip and its excerpts) always share a side. The
    result depends only on the set of (track id, label) pairs, not on their order; with one file per
    track, on (track id, label) per clip as before tracks were grouped.

    Parameters
    ----------
    track_ids : sequence of str, length n
        ``features.dataset.track_id`` of each row's file.
    labels : array of int, shape (n,)
    split : str
        ``r70``, ``r80``, ``filtered``, ``all`` or ``k<K>f<i>``.
    seed : int
    lists_dir : path
        Folder of ``{train,valid,test}_filtered.txt`` (``filtered`` only).

    Returns
    -------
    dict of str -> np.ndarray of int64
        ``"train"``, ``"val"``, ``"test"``: sorted row indices, disjoint.
    """
    track_ids, labels = list(track_ids), np.asarray(labels)
    if not is_split(split):
        raise TrainError(f"unknown split {split!r}; choose from {', '.join(SPLITS)} or k<K>f<i>")
    by_class = _tracks_by_class(track_ids, labels)
    if split == "filtered":
        parts = _filtered(track_ids, lists_dir)
    elif split == "all":
        parts = {"train": list(range(len(labels))), "val": [], "test": []}
    else:
        parts = _random_parts(by_class, split, seed)
    return {p: np.sort(np.array(v, dtype=np.int64)) for p, v in parts.items()}


def _random_parts(by_class, split, seed) -> dict:
    rng = np.random.default_rng(seed)
    fold = FOLD_RE.match(split)
    parts, dealt = {"train": [], "val": [], "test": []}, 0
    for tracks in by_class.values():
        order = [list(tracks)[i] for i in rng.permutation(len(tracks))]
        if fold:
            k, i = int(fold["k"]), int(fold["fold"])
            side = ["test" if (dealt + j) % k == i else "train" for j in range(len(order))]
            dealt += len(order)
        else:
            n_test, n_val = int(0.2 * len(order) + 0.5), int(0.1 * len(order) + 0.5)  # half rounds up
            n_val = n_val if split == "r70" else 0
            side = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(order) - n_test - n_val)
        for t, s in zip(order, side):
            parts[s] += tracks[t]
    return parts


def load_model(name: str):
    """The model file ``models/<name>.py``."""
    if name not in RUN_NAMES:
        raise TrainError(f"unknown model {name!r}; choose from {', '.join(RUN_NAMES)}")
    return importlib.import_module(f"models.{name}")


def settings(name: str, preset: str):
    """The model's settings (its ``HPARAMS``) with the preset's overrides (its ``PRESETS[preset]``)."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    module = load_model(name)
    return module, dataclasses.replace(module.HPARAMS, **module.PRESETS.get(preset, {}))


def inputs(hp) -> tuple:
    """The cache arrays a model with settings ``hp`` reads (besides ``labels``)."""
    return (hp.view, "lengths") if hp.view in ("mel_db", backbone.NAME) else (hp.view,)


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


class Feed(NamedTuple):
    """Everything a torch model's batches are made from."""

    module: object  # the model file
    hp: Hparams
    arr: np.ndarray  # the memory-mapped cache array the model reads
    scale: float  # int16 -> float factor, None for float arrays
    labels: np.ndarray
    n_frames: np.ndarray  # valid frames per clip (mel_db models), else None
    n_classes: int
    device: torch.device


def _read(feed: Feed, idx, transform) -> torch.Tensor:
    """One batch out of the memmap (one copy), as the model's input tensor on the CPU."""
    x = feed.arr[idx] if feed.hp.crop is None else feed.arr[idx, :feed.hp.crop]
    if feed.scale is not None:
        x = x * np.float32(feed.scale)
    return transform(x)


def _log_probs(out: torch.Tensor, loss: str) -> torch.Tensor:
    return out if loss == "nll" else torch.log_softmax(out, dim=1)


def predict(net, feed: Feed, idx, transform) -> np.ndarray:
    """Log-probabilities, shape (len(idx), n_classes) float32, of the clips ``idx`` (in that order)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(idx), feed.hp.batch_size):
            rows = idx[start:start + feed.hp.batch_size]
            if hasattr(feed.module, "clip_log_probs"):
                out.append(feed.module.clip_log_probs(net, feed.arr[rows], feed.n_frames[rows]).float().cpu())
            else:
                x = _read(feed, rows, transform).to(feed.device)
                out.append(_log_probs(net(x), feed.hp.loss).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, feed.n_classes), np.float32)


def _loss(log_probs, target, weights) -> torch.Tensor:
    """Mean (class-weighted) negative log-likelihood of hard (B,) or soft (B, C) targets."""
    soft = target if target.ndim == 2 else torch.zeros_like(log_probs).scatter_(1, target[:, None], 1.0)
    # a sum over classes rather than F.nll_loss: CUDA's nll_loss has no deterministic implementation.
    per_clip = -(soft * log_probs).sum(1)
    w = soft @ weights if weights is not None else torch.ones_like(per_clip)
    return (w * per_clip).sum() / w.sum()


def train_epoch(net, opt, sched, feed: Feed, order, transform, rng, weights) -> tuple:
    """One pass over ``order`` in batches; returns (mean loss, training accuracy correct / total).

    Both are over clips, as the report's loops counted the running accuracy (a short last batch
    weighs by its size). Each batch is read in sorted row order (sequential memmap access).
    """
    net.train()
    loss_sum, correct, total = 0.0, 0, 0
    for start in range(0, len(order), feed.hp.batch_size):
        idx = np.sort(order[start:start + feed.hp.batch_size])
        if hasattr(feed.module, "train_batch"):
            x, target = feed.module.train_batch(feed.arr, idx, feed.labels, feed.n_frames, rng, feed.n_classes)
        else:
            x, target = _read(feed, idx, transform), torch.from_numpy(feed.labels[idx])
        x, target = x.to(feed.device, non_blocking=True), target.to(feed.device, non_blocking=True)
        log_probs = _log_probs(net(x), feed.hp.loss)
        loss = _loss(log_probs, target, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        truth = target.argmax(1) if target.ndim == 2 else target
        loss_sum += loss.item() * len(truth)
        correct += int((log_probs.argmax(1) == truth).sum())
        total += len(truth)
    return loss_sum / total, correct / total


def _new_model(feed: Feed, seed, train_idx, steps_per_epoch):
    """A freshly initialised network (seeded), its transform, optimizer and learning-rate schedule."""
    hp = feed.hp
    torch.manual_seed(seed)
    net, transform = feed.module.build(feed.n_classes)
    if hasattr(feed.module, "set_normalisation"):
        feed.module.set_normalisation(net, feed.arr, train_idx, feed.n_frames)
    net = net.to(feed.device)
    if hp.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[hp.optimizer]
    opt = opt_class(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    sched = None
    if hp.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=hp.max_epochs * steps_per_epoch)
    return net, transform, opt, sched


def _class_weights(feed: Feed, train_idx):
    """Inverse class frequency of the training rows, mean 1 over the classes present (None: unweighted)."""
    if not feed.hp.class_weights:
        return None
    counts = np.bincount(feed.labels[train_idx], minlength=feed.n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(w, dtype=torch.float32, device=feed.device)


def _rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _Resume:
    """A run's checkpoint: what it holds, and writing it after each epoch."""

    def __init__(self, path: Path, identity: dict, log, label):
        self.path, self.identity, self.state = path, identity, None
        if path.exists():
            state, problem = self._load(path)
            if problem is not None:
                log(f"{label}: {path}: {problem}; starting over")
            elif state["identity"] != identity:
                log(f"{label}: checkpoint is from other settings or data; starting over")
            else:
                self.state = state
                log(f"{label}: resuming the {state['phase']} phase after epoch {state['epoch']}")
        self.history = self.state["history"] if self.state else []
        self.history_final = self.state["history_final"] if self.state else []
        self.main_stopped = self.state["main_stopped"] if self.state else False
        self.earlier = self.state["seconds"] if self.state else 0.0  # time before a resume
        self.t_start = time.perf_counter()

    @staticmethod
    def _load(path: Path) -> tuple:
        """(state, None), or (None, what is wrong) for a checkpoint that fails its checksum or will not load."""
        try:
            state = torch.load(io.BytesIO(unseal_bytes(path)), map_location="cpu", weights_only=True)
        except (OSError, ValueError) as e:
            return None, str(e)
        # A checkpoint that passed its checksum is one this code wrote, but possibly with another torch
        # version: whatever torch.load raises then, the run starts over rather than stopping.
        except Exception as e:  # noqa: BLE001
            return None, f"will not load ({e.__class__.__name__})"
        if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
            return None, "not a checkpoint of this version"
        return state, None

    def restore(self, phase, net, opt, sched, device):
        """(first epoch to run, stopped) for ``phase``, loading its saved state when there is one."""
        s = self.state
        if not (s and s["phase"] == phase):
            return 0, False
        net.load_state_dict(s["model"])
        opt.load_state_dict(s["optimizer"])
        if sched is not None:
            sched.load_state_dict(s["schedule"])
        _set_rng_state(s["rng"], device)
        return s["epoch"], s["stopped"]

    def save(self, phase, epoch, stopped, net, opt, sched, device):
        payload = {"identity": self.identity, "phase": phase, "epoch": epoch, "stopped": stopped,
                   "main_stopped": self.main_stopped, "history": self.history,
                   "history_final": self.history_final, "model": net.state_dict(),
                   "optimizer": opt.state_dict(), "schedule": sched.state_dict() if sched else None,
                   "rng": _rng_state(device), "seconds": self.earlier + time.perf_counter() - self.t_start}
        body = io.BytesIO()
        torch.save(payload, body)
        atomic_write(self.path, lambda f: f.write(seal_bytes(body.getvalue())))


def _phase(feed, ckpt, phase, rows, seed, parts, max_epochs, stop_acc, run_dir, log, label):
    """Train one phase (``main`` or ``final``) to its end, resumably; returns (net, transform)."""
    train_idx, val_idx, monitor_idx = parts
    steps = -(-len(train_idx) // feed.hp.batch_size)
    net, transform, opt, sched = _new_model(feed, seed, train_idx, steps)
    weights = _class_weights(feed, train_idx)
    epoch, stopped = ckpt.restore(phase, net, opt, sched, feed.device)
    while epoch < max_epochs and not stopped:
        epoch += 1
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, phase == "final", epoch])
        order = rng.permutation(train_idx)
        loss, acc = train_epoch(net, opt, sched, feed, order, transform, rng, weights)
        row = {"epoch": epoch, "train_loss": round(loss, 5), "train_acc": round(acc, 4)}
        for key, idx in (("val_acc", val_idx), ("test_acc_monitor", monitor_idx)):
            row[key] = round(top_k_accuracy(feed.labels[idx], predict(net, feed, idx, transform), 1), 4) \
                if len(idx) else ""
        rows.append({**row, "seconds": round(time.perf_counter() - t0, 2)})
        stopped = stop_acc is not None and acc > stop_acc
        if phase == "main":
            ckpt.main_stopped = stopped
        # the history first: the checkpoint is the commit point, so a kill between the two re-runs the
        # epoch and rewrites the history rather than leaving it an epoch short
        _write_history(run_dir / ("history.csv" if phase == "main" else "history_final.csv"), rows)
        ckpt.save(phase, epoch, stopped, net, opt, sched, feed.device)
        log(f"{label} {'retrain ' if phase == 'final' else ''}epoch {epoch}/{max_epochs}: "
            f"loss {loss:.4f}  train_acc {acc:.3f}"
            + (f"  val_acc {row['val_acc']:.3f}" if row["val_acc"] != "" else "")
            + f"  ({rows[-1]['seconds']:.1f} s)")
    return net, transform


def _train_torch(module, hp, data, split: Split, run_dir, identity, seed, device, log, label) -> tuple:
    """Both phases of a torch model's protocol, resumably; returns (test log-probs, key, results)."""
    arr = data.array(hp.view)
    scale = data.manifest.get(hp.view, {}).get("scale") if arr.dtype.kind == "i" else None
    n_frames = None
    if hp.view == "mel_db":
        c = data.manifest["config"]  # the frames that hold audio: those of the clip's true length
        n_frames = np.minimum(mel.n_frames(data.array("lengths"), c["n_fft"], c["hop_length"]), arr.shape[2])
    feed = Feed(module, hp, arr, scale, data.labels, n_frames, len(data.classes), device)
    ckpt = _Resume(run_dir / "checkpoint.pt", identity, log, label)
    # no validation part: the test accuracy per epoch is recorded for the curves figure, never used
    monitor = split.test if hp.monitor_test and not len(split.val) else split.test[:0]
    if not (ckpt.state and ckpt.state["phase"] == "final"):
        net, transform = _phase(feed, ckpt, "main", ckpt.history, seed, (split.train, split.val, monitor),
                                hp.max_epochs, hp.stop_acc, run_dir, log, label)
    results = {"epochs_run": len(ckpt.history), "stopped_early": ckpt.main_stopped,
               "seconds_before_resume": ckpt.earlier}
    if split.final:
        # the report's "final model on train+val": same initialisation, E = the epochs just run
        results["final_epochs"] = len(ckpt.history)
        trainval = np.sort(np.concatenate([split.train, split.val]))
        net, transform = _phase(feed, ckpt, "final", ckpt.history_final, seed,
                                (trainval, split.val[:0], split.test if hp.monitor_test else split.test[:0]),
                                len(ckpt.history), None, run_dir, log, label)
    log_probs = predict(net, feed, split.test, transform)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda f: torch.save(state_dict, f))
    results["n_params"] = sum(p.numel() for p in net.parameters())
    return log_probs, "log_probs", results


def _train_svm(module, hp, data, split: Split, run_dir, log, label) -> tuple:
    arr = data.array(hp.view)
    t0 = time.perf_counter()
    params = module.fit(arr[split.train], data.labels[split.train], hp, n_classes=len(data.classes))
    log(f"{label}: fitted on {len(split.train)} clips, {len(params['support_vectors'])} support vectors "
        f"({time.perf_counter() - t0:.1f} s)")
    module.save(run_dir / "svm.npz", params)
    scores = module.decision_scores(params, arr[split.test]) if len(split.test) else np.zeros((0, len(data.classes)))
    return scores, "scores", {"n_support_vectors": int(len(params["support_vectors"]))}


def _train_head(module, hp, data, split: Split, run_dir, log, label) -> tuple:
    """A head fitted on a backbone's cached patch features (``models/best.py``), its C chosen by CV
    grouped by track inside the training part."""
    arr = data.array(hp.view)
    n_patches = backbone.n_patches(data.array("lengths"), data.manifest["config"]["sr"])
    groups = [track_id(data.files[i]) for i in split.train]
    t0 = time.perf_counter()
    params, table = module.fit(arr[split.train], n_patches[split.train], data.labels[split.train], groups, hp,
                               n_classes=len(data.classes))
    log(f"{label}: fitted on {len(split.train)} clips, C = {table['chosen']:g} by grouped CV "
        f"({time.perf_counter() - t0:.1f} s)")
    module.save(run_dir / "head.npz", params)
    return module.log_probs(params, arr[split.test], n_patches[split.test]), "log_probs", {"head_cv": table}


def run_dir_for(runs_root, data_name: str, model: str, split: str, preset: str, seed: int) -> Path:
    """``<runs_root>/<data_name>/<model>/<split>-<preset>-seed<seed>``."""
    return Path(runs_root) / data_name / model / f"{split}-{preset}-seed{seed}"


def run_identity(model: str, split: str, preset: str, seed: int, hp, data) -> dict:
    """What decides a run's result: its settings and the fingerprints of the arrays its model reads."""
    return {"model": model, "split": split, "preset": preset, "seed": seed, "hparams": dataclasses.asdict(hp),
            "data_name": data.manifest.get("data_name", data.root.name),
            "inputs": {name: data.fingerprint(name) for name in ("labels",) + inputs(hp)}}


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


@contextlib.contextmanager
def _run_lock(run_dir: Path, log, label):
    """Hold ``.<run>.lock`` beside ``run_dir`` (flock): one process at a time trains or reuses a run.

    Yields True once held, or False when the runs folder is read-only (nothing can be trained there,
    but its complete runs can still be reused). The holder removes the lock file; a process that got
    the lock on a file removed meanwhile tries again, so two never hold the same run.
    """
    path = run_dir.with_name(f".{run_dir.name}.lock")
    while (f := _open_lock(path)) is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{label}: another process is training {run_dir}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        if _same_file(f, path):
            break
        f.close()
    if f is None:
        yield False
        return
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)
        f.close()


def _open_lock(path: Path):
    """The lock file opened for appending, or None when its folder is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        return None


def _same_file(f, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _reusable(run_dir: Path, identity: dict):
    """(config, None) when ``run_dir`` is a complete, verified run of ``identity``, else (None, why not)."""
    if not (run_dir / "COMPLETE").exists():
        return None, None
    try:
        checked = verify_run(run_dir)
    except RunError as e:
        return None, f"{e.path}: {e.problem}"
    if checked.checksums is None:
        return None, f"{run_dir} has no checksums (made before they were recorded)"
    if checked.config.get("identity") != identity:
        return None, f"{run_dir} is from other settings or inputs"
    return checked.config, None


def _readable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete run that ``evaluate.py`` and ``predict.py`` accept."""
    try:
        verify_run(run_dir)
    except RunError:
        return False
    return True


def _prepare_dir(run_dir: Path, identity: dict, force: bool, locked: bool, log, label):
    """``(config, None)`` when the complete run can be reused, else ``(None, the folder to train in)``.

    Holding the lock, it first completes a swap that a kill interrupted (``features.finish_replace``)
    and removes what killed processes left: every temporary entry of this run, whatever the pid in
    its name, other runs' whose owner is gone, a checkpoint of a run that was complete. A forced
    retrain of a readable run trains in ``.<run>.partial-<pid>``, which replaces the run only once
    complete: until then the old run stays readable, and a retrain that fails leaves it untouched.
    """
    if locked:
        finish_replace(run_dir)
        remove_orphans(run_dir, locked)
    config, why_not = (None, None) if force else _reusable(run_dir, identity)
    if config is not None:
        if locked:
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        log(f"{label}: complete in {run_dir}; skipped (--force retrains)")
        return config, None
    if why_not:
        log(f"{label}: {why_not}; retraining")
    if force and _readable(run_dir):
        work = temp_name(run_dir, "partial")
        work.mkdir()
        return None, work
    if (force or why_not) and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return None, run_dir


def run(model: str, cache_dir, runs_root="runs", split: str = None, preset: str = "quick", seed: int = 0,
        threads: int = None, force: bool = False, device=None, log=print) -> dict:
    """Train (and test, unless the split is ``all``) one model on one split; skip it when already complete.

    Parameters
    ----------
    model : str
        A name from ``models.RUN_NAMES``.
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
    run_dir = run_dir_for(runs_root, data_name, model, split, preset, seed)
    identity = run_identity(model, split, preset, seed, hp, data)
    label = f"{model} {split}-{preset}-seed{seed}"
    with _run_lock(run_dir, log, label) as locked:
        done, work = _prepare_dir(run_dir, identity, force, locked, log, label)
        if done is not None:
            return {**done, "run_dir": str(run_dir), "skipped": True}
        try:
            config = _train_and_test(module, hp, data, sp, work, identity, seed, threads, device, log, label)
            if work != run_dir:
                replace_folder(run_dir)
        finally:
            if work != run_dir:  # a forced retrain never resumes: what a failure left of it is of no use
                shutil.rmtree(work, ignore_errors=True)
    top = config["test"]
    log(f"{label}: " + (f"test top-1 {top['top1']:.3f}  top-2 {top['top2']:.3f}  top-3 {top['top3']:.3f}"
                        if top else f"trained on all {config['n_train']} clips (nothing tested)")
        + f"  ({config['wall_seconds']:.0f} s) -> {run_dir}")
    return {**config, "run_dir": str(run_dir), "skipped": False}


def _train_and_test(module, hp, data, sp: Split, run_dir: Path, identity, seed, threads, device, log, label):
    """Train one run in its prepared folder ``run_dir`` (the run's own, or a forced retrain's temporary
    one), holding the run's lock; test it, write its files and seal it; returns its config."""
    device, threads = _set_up_torch(threads, device, seed)
    split, data_name = identity["split"], identity["data_name"]
    t0 = time.perf_counter()
    if isinstance(hp, Hparams):
        scores, key, results = _train_torch(module, hp, data, sp, run_dir, identity, seed, device, log, label)
    elif hp.view == backbone.NAME:
        scores, key, results = _train_head(module, hp, data, sp, run_dir, log, label)
    else:
        scores, key, results = _train_svm(module, hp, data, sp, run_dir, log, label)
    top = None
    if len(sp.test):
        test_labels = data.labels[sp.test]
        top = {f"top{k}": round(top_k_accuracy(test_labels, scores, k), 4) for k in (1, 2, 3)}
        atomic_write(run_dir / "predictions.npz", lambda f: np.savez(
            f, **{key: scores.astype(np.float32)}, labels=test_labels,
            files=np.array([data.files[i] for i in sp.test]), classes=np.array(data.classes)))
    config = {
        "identity": identity, "model": identity["model"], "split": split, "preset": identity["preset"],
        "seed": seed, "hparams": dataclasses.asdict(hp), "classes": list(data.classes),
        "features": feature_settings(hp.view, data.manifest),
        "data": {"data_name": data_name, "data_root": data.manifest.get("data_root"),
                 "cache_dir": str(Path(data.root).resolve()), "n": len(data.labels),
                 "synthetic": data_name == "synthetic",
                 "config_hash": _input_hash(identity["inputs"])},
        "versions": _versions(), "device": str(device), "threads": threads,
        "n_train": int(len(sp.train)), "n_val": int(len(sp.val)), "n_test": int(len(sp.test)),
        **results, "test": top, "reported": REPORTED.get((identity["model"], split)),
        "wall_seconds": round(time.perf_counter() - t0 + results.get("seconds_before_resume", 0.0), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(run_dir / "config.json", config)
    seal(run_dir)  # COMPLETE, last: the sha256 of every file above
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return config


def feature_settings(view: str, manifest: dict) -> dict:
    """What turns audio into a model's input, for ``predict.py``: the cache's settings and the
    data-independent fingerprint of ``view`` (the code versions and settings, no rows)."""
    config = FeatureConfig(**manifest["config"])
    network = manifest["arrays"].get(view, {}).get("network")  # an embedding's network, else None
    return {**manifest["config"], "view": view, "wave_scale": manifest["wave"]["scale"],
            "fingerprint": code_fingerprint(view, config, network), **({"network": network} if network else {})}


def _input_hash(fingerprints: dict) -> str:
    """One hash of a run's input fingerprints: runs that read the same features share it."""
    return hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:16]
