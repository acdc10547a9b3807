"""The models and their families (the registry), what the report measured, and top-k accuracy.

``REPORTED[(model, split)]`` is the report's (top-1, top-2, top-3) test accuracy in percent, ``None``
where the report gives no figure. ``svm400`` is the report's SVM on the 400x400x3 image
(``models/svm400.py``).
This module imports no torch, so ``evaluate.py`` can use it cheaply.
"""

import numpy as np

MODELS = ("cnn1d_raw", "cnn1d_mel", "cnn2d", "lstm", "svm")  # the report's five
DEFAULT_MODELS = MODELS + ("best",)  # what run_all.py trains without --models

# Every model run_all.py can train: name -> (its model file, its family). A family trains and loads
# the runs of its models (models/family.py): "module:attribute" of its one object.
REGISTRY = {
    "cnn1d_raw": ("models.cnn1d_raw", "net"), "cnn1d_mel": ("models.cnn1d_mel", "net"),
    "cnn2d": ("models.cnn2d", "net"), "lstm": ("models.lstm", "net"), "svm": ("models.svm", "svm"),
    "svm400": ("models.svm400", "svm"), "best": ("models.best", "head"), "patchcnn": ("models.patchcnn", "net"),
}
FAMILIES = {"net": "models.nets:NETS", "svm": "models.svm:SVM", "head": "models.best:HEAD"}
RUN_NAMES = tuple(REGISTRY)  # registering a model (a test's toy one) adds it to REGISTRY, read when used

REPORTED = {
    ("cnn1d_raw", "r70"): (51, 65, 79),
    ("cnn1d_mel", "r70"): (64, 79, 86),
    ("cnn2d", "r80"): (41, 59, 74),
    ("lstm", "r70"): (52, None, None),
    ("lstm", "r80"): (62, 78, 85),
    ("svm", "r80"): (64, None, None),
    ("svm400", "r80"): (48, None, None),
}


def rank_classes(scores):
    """Classes ordered from most to least likely, as ``sklearn.metrics.top_k_accuracy_score`` orders them.

    Parameters
    ----------
    scores : np.ndarray, shape (n, n_classes)
        Probabilities, log-probabilities or decision scores.

    Returns
    -------
    np.ndarray, shape (n, n_classes), int64
        Column j is the class at rank j. Ties go to the *higher* class index: sklearn takes a stable
        ascending ``argsort(kind="mergesort")`` and reverses it.
    """
    return np.argsort(scores, axis=1, kind="mergesort")[:, ::-1]


def top_k_accuracy(labels, scores, k: int) -> float:
    """Fraction of rows whose true class is among the k highest scores.

    Same result as ``sklearn.metrics.top_k_accuracy_score(labels, scores, k=k,
    labels=range(n_classes))``, ties included.

    Parameters
    ----------
    labels : np.ndarray, shape (n,), int
        True class indices in ``0..n_classes-1``.
    scores : np.ndarray, shape (n, n_classes)
    k : int

    Returns
    -------
    float
        In [0, 1].
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"top_k_accuracy: scores {scores.shape} and labels {labels.shape} do not match")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"top_k_accuracy: labels outside 0..{scores.shape[1] - 1}")
    return float(np.mean((rank_classes(scores)[:, :k] == labels[:, None]).any(axis=1)))
