"""Which runs are evaluated together: one group per model and split, never mixing data, presets or features."""
import re
from typing import NamedTuple

from models import MODELS
from models.hparams import SPLITS
from models.runs import DEPLOY_SPLIT, newest

# run_all.py's svm400 is the report's SVM on the flattened 400x400x3 image; our svm uses 360x120x3.
SVM400 = "svm400"


class Group(NamedTuple):
    """The runs (seeds, folds) that are pooled: same data, model, split, preset and config_hash."""

    data: str
    model: str
    split: str
    preset: str
    runs: list
    set_aside: int
    other_presets: list


def filter_runs(runs, model=None, split=None, preset=None, data=None):
    """The runs matching every filter given; ``split`` may name a fold group (``k5``) or one fold."""
    return [r for r in runs if (model is None or r.model == model)
            and (split is None or split in (r.split, r.group_split))
            and (preset is None or r.preset == preset) and (data is None or r.data == data)]


def select_groups(runs, model=None, split=None, preset=None, data=None):
    """Choose what to evaluate: one group per model and split, never mixing data or presets.

    Parameters
    ----------
    runs : list of Run
        Runs of split ``all`` are ignored (nothing to test).
    model, split, preset, data : str or None
        Filters; ``data`` defaults to that of the newest matching run, ``preset`` (per model and
        split) to that of the newest run of that model and split.

    Returns
    -------
    list of Group
        Models in ``MODELS`` order, then svm400, then the others alphabetically; splits in ``SPLITS``
        order, then fold groups. Within a group only runs with the newest run's ``config_hash`` are
        kept (``set_aside`` counts the others: built on other features).
    """
    runs = [r for r in filter_runs(runs, model, split, preset, data) if r.split != DEPLOY_SPLIT]
    if not runs:
        return []
    data = data or newest(runs).data
    runs = [r for r in runs if r.data == data]
    groups = []
    for key in sorted({(r.model, r.group_split) for r in runs}, key=_model_split_order):
        same = [r for r in runs if (r.model, r.group_split) == key]
        chosen = preset or newest(same).preset
        members = [r for r in same if r.preset == chosen]
        features = config_hash(newest(members))
        kept = sorted((r for r in members if config_hash(r) == features), key=lambda r: (r.seed, r.fold or 0))
        others = sorted({r.preset for r in same} - {chosen})
        groups.append(Group(data, key[0], key[1], chosen, kept, len(members) - len(kept), others))
    return groups


def config_hash(run):
    """The hash of the features the run was trained on, as ``models.train`` records it."""
    return (run.config.get("data") or {}).get("config_hash")


def model_order(model):
    """Sort key: the report's five in ``MODELS`` order, then svm400, then any other alphabetically."""
    if model in MODELS:
        return (0, MODELS.index(model), "")
    return (1, 0, "") if model == SVM400 else (2, 0, model)


def _model_split_order(key):
    """Sort key of (model, split): ``model_order``, then ``SPLITS`` order, then fold groups by K."""
    model, split = key
    fold_k = re.fullmatch(r"k(\d+)", split)
    split_key = (SPLITS.index(split), 0) if split in SPLITS else (len(SPLITS), int(fold_k[1]) if fold_k else 0)
    return model_order(model), split_key, split
