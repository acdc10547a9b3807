"""A toy model family for the tests, whole in this one file: the nearest class centroid of one cached
array (``tests/test_family.py`` registers it in ``models.REGISTRY`` and ``models.FAMILIES``, then
trains it with run_all.py, evaluates it with evaluate.py and classifies a file with predict.py).

The model: each class's mean of the training clips' 120x120x3 images (pixels / 255), and a clip's
log-probabilities the log-softmax of minus its mean squared distance to each centroid over
``temperature``.
"""

import dataclasses

import numpy as np

from features.files import atomic_write
from models.family import Fitted, load_arrays, whole_window


@dataclasses.dataclass(frozen=True)
class CentroidParams:
    """view: the cache array it reads; temperature: of the softmax over distances; split: its default."""

    view: str = "img120"
    temperature: float = 0.01
    split: str = "r80"


HPARAMS = CentroidParams()
PRESETS = {}


def _flat(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x.reshape(len(x), int(np.prod(x.shape[1:]))) / 255


def log_probs(centroids: np.ndarray, x, temperature: float) -> np.ndarray:
    """(n, n_classes) log-probabilities of images ``x`` (n, H, W, 3) uint8 against ``centroids`` (C, H*W*3)."""
    logits = -((_flat(x)[:, None] - centroids[None]) ** 2).mean(-1) / temperature
    m = logits.max(1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))


class CentroidFamily:
    """The family: fit = one mean per class, stored as ``centroids.npz``."""

    key = "log_probs"

    def files(self, hp) -> tuple:
        return ("centroids.npz",)

    def inputs(self, hp) -> tuple:
        return (hp.view,)

    def embedder(self, hp, device="cpu", network=None):
        return None

    def fit(self, module, hp, job) -> Fitted:
        arr, rows = job.data.array(hp.view), job.split.train
        y, x = job.data.labels[rows], _flat(arr[rows])
        centroids = np.stack([x[y == c].mean(0) if (y == c).any() else x.mean(0)
                              for c in range(len(job.data.classes))])
        atomic_write(job.run_dir / "centroids.npz", lambda f: np.savez(f, centroids=centroids))
        return Fitted(log_probs(centroids, arr[job.split.test], hp.temperature), {"n_centroids": len(centroids)})

    def scorer(self, module, run, embedder, device="cpu"):
        n_classes, view = len(run.config["classes"]), run.config["hparams"]["view"]

        def load(path):
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        params = load_arrays(run, "centroids.npz", load,
                             lambda p: None if p.get("centroids", np.zeros(0)).shape[:1] == (n_classes,)
                             else "no centroid per class")
        temperature = run.config["hparams"]["temperature"]

        class Scorer:
            per_block, embedder = False, None
            segments = whole_window

            def prepare(self, clip):
                clip.view(view)

            def __call__(self, clip):
                return log_probs(params["centroids"], clip.view(view)[None], temperature)[0].astype(np.float64), 1.0

        return Scorer()


CENTROID = CentroidFamily()
