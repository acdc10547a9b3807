"""The interface of a model family, and the lookup of a model's family; torch-free.

A family is a kind of fitted model: the torch networks (``models/nets.py``), the report's SVM
(``models/svm.py``), a head on a pretrained backbone (``models/best.py``). It trains the models of its
kind and loads their runs back. The training run (``models.train``), prediction
(``models.inference``) and ``run_all.py`` use only this interface and never ask which family they
hold. A model file (``models/<name>.py``) holds its architecture and settings (``HPARAMS``,
``PRESETS``) and names its family in ``models.REGISTRY``; adding a family is one class in one file plus
its line in ``models.FAMILIES``.
"""

import importlib
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import numpy as np

from . import FAMILIES, REGISTRY
from .runs import repair_command


class Job(NamedTuple):
    """One fit: what to train on, where to write, how to say it."""

    data: object  # features.cache.Cache: the opened feature cache
    split: object  # models.splits.Split: the rows to train, validate and test on
    run_dir: Path  # the folder the family writes its files into
    identity: dict  # the run's identity (a resumable fit checks its checkpoint against it)
    seed: int
    device: object  # torch.device: where a torch fit runs
    log: Callable  # receives one line per epoch and per event
    label: str  # "<model> <split>-<preset>-seed<k>", to start each line


class Fitted(NamedTuple):
    """What a fit gives back: the test rows' scores and what the run's config records of the fit."""

    scores: np.ndarray  # (n_test, n_classes): log-probabilities or decision scores (``Family.key``)
    results: dict  # e.g. epochs run, support vectors, the CV table that chose C


class Scorer(Protocol):
    """A loaded run: the scores of one window of audio (``features.clips.Clip``)."""

    per_block: bool  # windows are consecutive blocks, padding left out (else the last ends at the file's end)
    embedder: object  # the pretrained network (features.backbone.Embedder) its inputs go through, or None

    def prepare(self, clip) -> None:
        """Compute the window's inputs this model reads (CPU work, on any thread), so that the call
        itself only runs the model."""

    def __call__(self, clip) -> tuple:
        """(scores over the classes (n_classes,) float64, weight of this window when windows are averaged)."""

    def segments(self, clip) -> tuple:
        """(scores (n, n_classes) float64 of the window's consecutive parts, seconds per part): the
        finest the model can score, a window for most (``whole_window``), a backbone patch for a head."""


class Family(Protocol):
    """How the models of one kind are trained and loaded."""

    key: str  # "log_probs" (averaged as probabilities) or "scores" (decision scores, averaged as they are)

    def files(self, hp) -> tuple:
        """The files a complete run writes besides ``config.json`` and ``predictions.npz``."""

    def inputs(self, hp) -> tuple:
        """The cache arrays the model reads, besides ``labels``."""

    def embedder(self, hp, device: str = "cpu", network: str = None):
        """The pretrained network its inputs need (``features.backbone.Embedder``) on ``device``, None
        for none; ``ModelError`` when it is not installed. ``network``: the identity a run recorded (its
        precision is then the run's), None for this machine's default (training)."""

    def fit(self, module, hp, job: Job) -> Fitted:
        """Train on ``job.split``, write the fitted model into ``job.run_dir``, score the test rows."""

    def scorer(self, module, run, embedder, device: str = "cpu") -> Scorer:
        """The model of a verified run (``models.runs.Run``) on ``device``; ``ModelError`` when its files
        are unusable."""


def whole_window(scorer: Scorer, clip) -> tuple:
    """``Scorer.segments`` of a model that scores whole windows only: one part, the window's audio."""
    return scorer(clip)[0][None], clip.valid / clip.config.sr


class ModelError(Exception):
    """A model that cannot be used (its weights, its pretrained network): one line."""


def model_file(name: str):
    """The model file of model ``name`` (KeyError for a name not in ``models.REGISTRY``)."""
    return importlib.import_module(REGISTRY[name][0])


def family_of(name: str) -> Family:
    """The family of model ``name`` (KeyError for a name not in ``models.REGISTRY``)."""
    module, attr = FAMILIES[REGISTRY[name][1]].split(":")
    return getattr(importlib.import_module(module), attr)


def load_arrays(run, name: str, load, problem_of) -> dict:
    """The arrays of the run's file ``name`` read by ``load`` (np.load without pickles, so no code runs),
    checked by ``problem_of(params)`` (None when usable); ModelError naming the file and the retrain."""
    path = run.path / name
    try:
        params = load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ModelError(f"{path}: unreadable ({' '.join(str(err).split())}); retrain: "
                         f"`{repair_command(run.path, run.config)}`") from None
    problem = problem_of(params)
    if problem:
        raise ModelError(f"{path}: {problem}, not a model of this run; retrain: "
                         f"`{repair_command(run.path, run.config)}`")
    return params


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` where torch sees a GPU, else ``"cpu"``; ``"cuda"`` without one is a
    ``ModelError``. Imports torch: only the families that run torch call it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    return device
