"""Names and settings shared by the model files, the training loop and ``evaluate.py``; no torch.

Splits
------
``r70``       stratified 70 / 10 / 20 (train / validation / test), grouped by track
``r80``       the same 20 % test set, trains on the other 80 %
``filtered``  the artist-filtered lists (``models/sturm_filtered/``)
``all``       every clip trains, nothing is tested: the model to deploy
``k<K>f<i>``  fold i (0-based) of K-fold cross-validation, grouped by track, stratified by class
"""

import dataclasses
import re

SPLITS = ("r70", "r80", "filtered", "all")
FOLD_RE = re.compile(r"^k(?P<k>\d+)f(?P<fold>\d+)$")
PRESETS = ("report", "quick", "tiny")
# <split>-<preset>-seed<k>, the name of a run folder under <runs>/<data>/<model>/
RUN_DIR_RE = re.compile(r"^(?P<split>k\d+f\d+|[A-Za-z0-9_]+)-(?P<preset>[A-Za-z0-9_]+)-seed(?P<seed>\d+)$")


def fold_split(k: int, fold: int) -> str:
    """Name of fold ``fold`` (0-based) of ``k``-fold cross-validation, e.g. ``k5f2``."""
    return f"k{k}f{fold}"


def is_split(name: str) -> bool:
    """Whether ``name`` is a split the training loop knows (``SPLITS`` or ``k<K>f<i>`` with i < K)."""
    m = FOLD_RE.match(name)
    return name in SPLITS or bool(m and 2 <= int(m["k"]) and int(m["fold"]) < int(m["k"]))


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Training settings of one torch model, as its source gives them (see each model file).

    Attributes
    ----------
    view : str
        Cache array the model reads: ``"wave"``, ``"mel_db"``, ``"img400"``, ``"img360x120"``.
    batch_size, lr : int, float
    optimizer : str
        ``"adam"``, ``"adamw"`` or ``"sgd"`` (torch defaults otherwise: Adam betas (0.9, 0.999), SGD
        without momentum).
    max_epochs : int
    stop_acc : float or None
        Stop after the first epoch whose training accuracy (correct / total over the epoch, the
        report's running accuracy) exceeds this fraction; None: always run ``max_epochs``.
    split : str
        The split the model's source used: ``"r70"`` (train/val/test) or ``"r80"`` (train/test).
    final_on_trainval : bool
        Train on train (with validation curves) until the stopping rule, note the epoch count E, then
        retrain from the same initialisation on train+val for E epochs and test once.
    loss : str
        ``"nll"``: the model outputs log-probabilities; ``"cross_entropy"``: it outputs logits.
    crop : int or None
        Keep only the first ``crop`` values of each clip's array (the raw model reads 25 of 30 s).
    channels_last : bool
        Run convolutions in NHWC memory layout (same model, faster on CPU).
    weight_decay : float
        Decoupled weight decay (``adamw``) or L2 penalty (``adam``, ``sgd``).
    schedule : str or None
        ``"onecycle"``: one-cycle learning rate peaking at ``lr`` over ``max_epochs``; None: constant.
    class_weights : bool
        Weight the loss by inverse class frequency of the training part (unbalanced folders).
    monitor_test : bool
        Without a validation part, record the test accuracy after each epoch (the report's Figure 7
        draws it for its r80 models); monitoring only, and it costs an evaluation per epoch.
    """

    view: str
    batch_size: int
    lr: float
    optimizer: str
    max_epochs: int
    stop_acc: float = None
    split: str = "r70"
    final_on_trainval: bool = False
    loss: str = "nll"
    crop: int = None
    channels_last: bool = False
    weight_decay: float = 0.0
    schedule: str = None
    class_weights: bool = False
    monitor_test: bool = True
