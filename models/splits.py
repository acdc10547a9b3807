"""The splits: which clips train, validate and test, every track on one side.

``r70``       stratified 70 / 10 / 20 (train / validation / test), grouped by track
``r80``       the same 20 % test set, trains on the other 80 %
``filtered``  the artist-filtered lists (``models/sturm_filtered/``)
``all``       every clip trains, nothing is tested: the model to deploy
``k<K>f<i>``  fold i (0-based) of K-fold cross-validation, grouped by track, stratified by class

The splits depend only on (track ids, labels, seed). ``plan`` applies a model's protocol to them.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from features.dataset import track_id

from .hparams import FOLD_RE, SPLITS, is_split

STURM_DIR = Path(__file__).resolve().parent / "sturm_filtered"


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
