"""The epoch loop of the torch networks: batches, the loss, the two phases of the report's protocol,
and the checkpoint that lets a killed run resume.

``fit(module, hp, job)`` trains one network on ``job.split`` of a feature cache in ``job.run_dir``
(``models.nets`` calls it): the main phase on train (validation curves on val, the stopping rule on
the training accuracy), then, for a model whose protocol says so, the retrain on train+val for the
same number of epochs; it writes ``history.csv`` (``history_final.csv``) and ``model.pt``.

While training, ``checkpoint.pt`` (weights, optimizer, schedule and RNG state, history; with its own
sha256, ``runs.seal_bytes``) is rewritten after the history of an epoch that ends ``CHECKPOINT_SECONDS``
or more after the last one was written, and after each phase's last epoch, so a run interrupted or
killed at any point resumes at the last checkpoint and ends with the same numbers as an uninterrupted
one; one that fails its checksum or will not load is noted and the run starts over.

``test_acc_monitor`` is the test accuracy after each epoch of a run without a validation part (the
report's r80 models; its Figure 7 draws that curve). It is recorded for the figure only: no decision
(stopping, selection) ever reads it.

Reproducibility: the shuffle and a model's own batch sampling in epoch e are drawn from
``default_rng([seed, phase, e])``; torch is seeded before each model is built. A model file may
supply, besides ``HPARAMS``, ``PRESETS`` and ``build(n_classes)``, the hooks of ``Hooks``
(``models/patchcnn.py`` does).

CPU speed without changing any model (bench/bench_train.py): batches are copied once out of the
memory-mapped cache; evaluation runs under ``torch.inference_mode``.

GPU speed (bench/bench_gpu.py): a model without its own batch hooks whose array fits in half the GPU's
free memory has it copied there once, as stored (uint8 images, int16 waveforms, cropped), and each
batch is indexed and converted by its transform on the GPU; otherwise batches come from the memory map
through pinned memory, copied without waiting. Either way the loop waits for the GPU only once per
epoch (the loss and accuracy are summed on the device) and per evaluation. ``fit(..., resident=True)``
takes the resident path on the CPU too: the same numbers, bit for bit (tests/test_gpu_path.py).
"""

import io
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from features import clips
from features.files import atomic_write

from . import top_k_accuracy
from .hparams import Hparams
from .runs import seal_bytes, unseal_bytes, write_history

# Seconds between checkpoints at least (besides each phase's last epoch): a GPU epoch can take under a
# second (issue 21: 0.7-0.8 s, with a 64 MB checkpoint after each). On 2 CPU cores cnn1d_mel's 48 MB
# checkpoint took 0.11 s after each 0.3-s epoch of a small cache: 0.45 s per epoch, 0.31 s at this
# interval. A kill loses at most this much training, and the epoch under way.
CHECKPOINT_SECONDS = 30.0
# Share of the GPU's free memory a run's input array may take to be resident there: the rest is for the
# network, its activations and gradients, and cuDNN's workspace.
RESIDENT_SHARE = 0.5
RESIDENT_CHUNK = 64  # rows per copy to the device: bounds the host memory the copy takes
CHECKPOINT_KEYS = {"identity", "phase", "epoch", "stopped", "main_stopped", "history", "history_final", "model",
                   "optimizer", "schedule", "rng", "seconds"}


class Hooks(NamedTuple):
    """What a model file may supply to the loop, each None for the loop's default.

    train_batch(arr, rows, labels, n_frames, rng, n_classes) -> (x, target): its own batch sampling
        and augmentation (default: the rows as they are, through the model's transform);
    set_normalisation(net, arr, rows, n_frames): statistics from the training rows;
    clip_log_probs(net, arr_rows, n_frames) -> (B, n_classes): clip-level prediction.
    """

    train_batch: Callable = None
    set_normalisation: Callable = None
    clip_log_probs: Callable = None

    @classmethod
    def of(cls, module) -> "Hooks":
        """The hooks a model file defines (the one place that looks)."""
        return cls(*(getattr(module, name, None) for name in cls._fields))


class Resident(NamedTuple):
    """A run's inputs held on the training device for the whole run."""

    arr: torch.Tensor  # the model's array as stored (uint8, int16, float32), cropped to ``hp.crop``
    labels: torch.Tensor  # (N,) int64


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
    resident: Resident = None  # the inputs on ``device``; None: batches are read from ``arr``

    @property
    def hooks(self) -> Hooks:
        return Hooks.of(self.module)

    def rows(self, idx: np.ndarray):
        """Row numbers as the batches index them: a tensor on the device when the inputs are resident."""
        return idx if self.resident is None else torch.from_numpy(idx).to(self.device)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (on the CPU) on ``device``; to a GPU through pinned memory, so that the copy does not wait
    for the GPU and the next batch is prepared meanwhile."""
    if device.type == "cuda":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def _read(feed: Feed, idx, transform) -> torch.Tensor:
    """One batch of rows ``idx`` (``Feed.rows``) as the model's input tensor on the device: indexed and
    converted there when the inputs are resident, else read out of the memmap (one copy) and converted
    on the CPU. int16 -> float32 is the same multiplication either way."""
    if feed.resident is not None:
        x = feed.resident.arr[idx]
        return transform(x if feed.scale is None else x.to(torch.float32).mul_(float(np.float32(feed.scale))))
    x = feed.arr[idx] if feed.hp.crop is None else feed.arr[idx, :feed.hp.crop]
    if feed.scale is not None:
        x = x * np.float32(feed.scale)
    return _to_device(transform(x), feed.device)


def _labels(feed: Feed, idx) -> torch.Tensor:
    """(B,) int64 labels of rows ``idx`` (``Feed.rows``) on the device."""
    if feed.resident is not None:
        return feed.resident.labels[idx]
    return _to_device(torch.from_numpy(feed.labels[idx]), feed.device)


def _cropped_shape(arr: np.ndarray, hp: Hparams) -> tuple:
    """Shape of ``arr`` with each row cut to its first ``hp.crop`` values (the model reads no more)."""
    return arr.shape if hp.crop is None else arr.shape[:1] + (hp.crop,) + arr.shape[2:]


def resident_inputs(arr: np.ndarray, labels: np.ndarray, hp: Hparams, device: torch.device) -> Resident:
    """``arr`` (its first ``hp.crop`` values per row) and ``labels`` copied once to ``device``, as stored."""
    dtype = torch.from_numpy(np.empty(0, arr.dtype)).dtype
    out = torch.empty(_cropped_shape(arr, hp), dtype=dtype, device=device)
    for start in range(0, len(arr), RESIDENT_CHUNK):
        part = arr[start:start + RESIDENT_CHUNK, :hp.crop]  # crop None: the whole rows
        out[start:start + len(part)] = torch.from_numpy(np.array(part))  # a writable copy of the memmap's rows
    return Resident(out, torch.from_numpy(np.asarray(labels, np.int64)).to(device))


def fits_on_device(arr: np.ndarray, hp: Hparams, device: torch.device) -> bool:
    """Whether ``arr`` as stored (cropped to ``hp.crop``) takes at most ``RESIDENT_SHARE`` of the free
    memory of GPU ``device``; False on the CPU."""
    if device.type != "cuda":
        return False
    # what torch's allocator holds unused (an earlier run's inputs, say) is free to this run too
    free = (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
            - torch.cuda.memory_allocated(device))
    return math.prod(_cropped_shape(arr, hp)) * arr.itemsize <= RESIDENT_SHARE * free


def _log_probs(out: torch.Tensor, loss: str) -> torch.Tensor:
    return out if loss == "nll" else torch.log_softmax(out, dim=1)


def predict(net, feed: Feed, idx, transform) -> np.ndarray:
    """Log-probabilities, shape (len(idx), n_classes) float32, of the clips ``idx`` (in that order)."""
    net.eval()
    out = []
    rows = feed.rows(np.asarray(idx))
    with torch.inference_mode():
        for start in range(0, len(idx), feed.hp.batch_size):
            batch = rows[start:start + feed.hp.batch_size]
            if feed.hooks.clip_log_probs is not None:
                out.append(feed.hooks.clip_log_probs(net, feed.arr[batch], feed.n_frames[batch]).float())
            else:
                out.append(_log_probs(net(_read(feed, batch, transform)), feed.hp.loss).float())
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, feed.n_classes), np.float32)


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
    weighs by its size). Each batch is read in sorted row order (sequential memmap access). The sums
    stay on the device until the epoch ends (float64, as Python's float sum was), so no step waits
    for the GPU.
    """
    net.train()
    bs = feed.hp.batch_size
    rows = feed.rows(np.concatenate([np.sort(order[start:start + bs]) for start in range(0, len(order), bs)]))
    loss_sum = torch.zeros((), dtype=torch.float64, device=feed.device)
    correct, total = torch.zeros((), dtype=torch.int64, device=feed.device), 0
    for start in range(0, len(order), bs):
        idx = rows[start:start + bs]
        if feed.hooks.train_batch is not None:
            x, target = feed.hooks.train_batch(feed.arr, idx, feed.labels, feed.n_frames, rng, feed.n_classes)
            x, target = _to_device(x, feed.device), _to_device(target, feed.device)
        else:
            x, target = _read(feed, idx, transform), _labels(feed, idx)
        log_probs = _log_probs(net(x), feed.hp.loss)
        loss = _loss(log_probs, target, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        truth = target.argmax(1) if target.ndim == 2 else target
        loss_sum += loss.detach().double() * len(truth)
        correct += (log_probs.argmax(1) == truth).sum()
        total += len(truth)
    return loss_sum.item() / total, correct.item() / total


def _new_model(feed: Feed, seed, train_idx, steps_per_epoch):
    """A freshly initialised network (seeded), its transform, optimizer and learning-rate schedule."""
    hp = feed.hp
    torch.manual_seed(seed)
    net, transform = feed.module.build(feed.n_classes)
    if feed.hooks.set_normalisation is not None:
        feed.hooks.set_normalisation(net, feed.arr, train_idx, feed.n_frames)
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
    """A run's checkpoint: what it holds, when it is due, and writing it."""

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
        self.t_start = self.t_saved = time.perf_counter()

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

    def due(self) -> bool:
        """Whether ``CHECKPOINT_SECONDS`` have passed since the last checkpoint (or the start)."""
        return time.perf_counter() - self.t_saved >= CHECKPOINT_SECONDS

    def save(self, phase, epoch, stopped, net, opt, sched, device):
        payload = {"identity": self.identity, "phase": phase, "epoch": epoch, "stopped": stopped,
                   "main_stopped": self.main_stopped, "history": self.history,
                   "history_final": self.history_final, "model": net.state_dict(),
                   "optimizer": opt.state_dict(), "schedule": sched.state_dict() if sched else None,
                   "rng": _rng_state(device), "seconds": self.earlier + time.perf_counter() - self.t_start}
        body = io.BytesIO()
        torch.save(payload, body)
        atomic_write(self.path, lambda f: f.write(seal_bytes(body.getvalue())))
        self.t_saved = time.perf_counter()


class _Phase(NamedTuple):
    """What both phases of one run share."""

    feed: Feed
    ckpt: "_Resume"
    seed: int
    run_dir: Path
    log: Callable
    label: str

    def run(self, phase, rows, parts, max_epochs, stop_acc) -> tuple:
        """Train one phase (``main`` or ``final``) to its end, resumably; returns (net, transform)."""
        feed, ckpt, seed, run_dir, log, label = self
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
            # epochs since the last checkpoint and rewrites the history rather than leaving it short
            write_history(run_dir / ("history.csv" if phase == "main" else "history_final.csv"), rows)
            if stopped or epoch == max_epochs or ckpt.due():
                ckpt.save(phase, epoch, stopped, net, opt, sched, feed.device)
            log(f"{label} {'retrain ' if phase == 'final' else ''}epoch {epoch}/{max_epochs}: "
                f"loss {loss:.4f}  train_acc {acc:.3f}"
                + (f"  val_acc {row['val_acc']:.3f}" if row["val_acc"] != "" else "")
                + f"  ({rows[-1]['seconds']:.1f} s)")
        return net, transform


def feed_of(module, hp: Hparams, data, device: torch.device, resident: bool = None) -> Feed:
    """Where the batches of ``module`` with settings ``hp`` come from.

    Parameters
    ----------
    module, hp
        The model file and its settings.
    data : features.cache.Cache
        The opened feature cache.
    device : torch.device
        Where the network trains.
    resident : bool, optional
        Hold the model's array on ``device`` for the whole run (``resident_inputs``); default: on a GPU
        where it fits (``fits_on_device``). Never for a model with its own batch hooks, which read the
        memory map.
    """
    arr = data.array(hp.view)
    scale = data.manifest.get(hp.view, {}).get("scale") if arr.dtype.kind == "i" else None
    n_frames = None
    if hp.view == "mel_db":  # the frames that hold audio: those of the clip's true length
        config = clips.FeatureConfig(**data.manifest["config"])
        n_frames = clips.n_valid_frames(data.array("lengths"), config, arr.shape[2])
    hooks = Hooks.of(module)
    if hooks.train_batch is not None or hooks.clip_log_probs is not None:
        resident = False
    elif resident is None:
        resident = fits_on_device(arr, hp, device)
    on_device = resident_inputs(arr, data.labels, hp, device) if resident else None
    return Feed(module, hp, arr, scale, data.labels, n_frames, len(data.classes), device, on_device)


def fit(module, hp: Hparams, job, resident: bool = None) -> tuple:
    """Both phases of a torch model's protocol, resumably, on ``job`` (``models.family.Job``).

    ``resident`` as for ``feed_of``.

    Returns
    -------
    log_probs : np.ndarray, shape (n_test, n_classes) float32
    results : dict
        Epochs run, whether the stopping rule fired, the retrain's epochs, parameters, time before a resume.
    """
    split, run_dir = job.split, job.run_dir
    feed = feed_of(module, hp, job.data, job.device, resident)
    if feed.resident is not None:
        job.log(f"{job.label}: {hp.view} held on {job.device} as stored "
                f"({feed.resident.arr.nbytes / 2**20:.0f} MiB)")
    ckpt = _Resume(run_dir / "checkpoint.pt", job.identity, job.log, job.label)
    phase = _Phase(feed, ckpt, job.seed, run_dir, job.log, job.label)
    # no validation part: the test accuracy per epoch is recorded for the curves figure, never used
    monitor = split.test if hp.monitor_test and not len(split.val) else split.test[:0]
    if not (ckpt.state and ckpt.state["phase"] == "final"):
        net, transform = phase.run("main", ckpt.history, (split.train, split.val, monitor), hp.max_epochs,
                                   hp.stop_acc)
    results = {"epochs_run": len(ckpt.history), "stopped_early": ckpt.main_stopped,
               "seconds_before_resume": ckpt.earlier}
    if split.final:
        # the report's "final model on train+val": same initialisation, E = the epochs just run
        results["final_epochs"] = len(ckpt.history)
        trainval = np.sort(np.concatenate([split.train, split.val]))
        net, transform = phase.run("final", ckpt.history_final,
                                   (trainval, split.val[:0], split.test if hp.monitor_test else split.test[:0]),
                                   len(ckpt.history), None)
    log_probs = predict(net, feed, split.test, transform)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda f: torch.save(state_dict, f))
    results["n_params"] = sum(p.numel() for p in net.parameters())
    return log_probs, results
