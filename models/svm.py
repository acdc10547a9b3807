"""Report model 5: an RBF support-vector machine on the flattened 360x120x3 mel-spectrogram image.

scikit-learn ``SVC(kernel="rbf", C=100, gamma=2**-14)`` on the cached ``img360x120`` (H=120, W=360, RGB)
flattened to 129600 values with pixels scaled to [0, 1]; split r80 (80/20). Report: 64 % top-1; the
same SVM on the 400x400x3 image (480000 values, ``models/svm400.py``): 48 %.

Choices the report leaves open: pixels scaled by 1/255 (gamma = 2^-14 only makes sense at that scale:
squared distances between [0, 1] images are ~1e3-1e4, so gamma * d^2 is of order 1); rows flattened in
(H, W, RGB) order (the RBF kernel does not depend on the order); no feature standardisation.

Speed, same model: the RBF Gram matrix is computed here with one BLAS matrix product
(|a|^2 + |b|^2 - 2 a.b) and given to ``SVC(kernel="precomputed")``; libsvm's own kernel evaluation on
129600-dimensional doubles takes ~30x longer. Top-k uses the one-vs-rest decision scores of
``break_ties=True`` (so top-1 equals ``predict``). A fitted model is kept as plain arrays (``svm.npz``):
the support vectors' uint8 pixels, dual coefficients and intercepts, which is all that scoring a new
clip needs (``decision_scores``). ``SVM`` is the family of this model and ``svm400``: it fits on the
training rows and scores a window's image view.
"""

import dataclasses
import time

import numpy as np

from features import images
from features.files import atomic_write

from .family import Fitted, load_arrays, whole_window


@dataclasses.dataclass(frozen=True)
class SvmParams:
    """The report's SVM settings: input view, C, RBF gamma (for pixels in [0, 1]), split."""

    view: str = "img360x120"
    C: float = 100.0
    gamma: float = 2.0 ** -14
    split: str = "r80"


HPARAMS = SvmParams()
PRESETS = {}  # fitting takes seconds: every preset is the report's protocol


def flatten(x: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 images -> (n, H*W*3) float32 in [0, 1]."""
    return np.asarray(x).reshape(len(x), -1).astype(np.float32) * np.float32(1 / 255)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """RBF kernel matrix ``exp(-gamma |a_i - b_j|^2)``.

    Parameters
    ----------
    a : np.ndarray, shape (n_a, d) float32
    b : np.ndarray, shape (n_b, d) float32
    gamma : float

    Returns
    -------
    np.ndarray, shape (n_a, n_b) float64
        The products run in float32 BLAS; norms and distances in float64 (the error on gamma * d^2 is
        ~1e-6, far below what changes a decision).
    """
    sq_a = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    sq_b = np.einsum("ij,ij->i", b, b, dtype=np.float64)
    d2 = sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T).astype(np.float64)
    return np.exp(-gamma * np.maximum(d2, 0.0))


def fit(x: np.ndarray, y: np.ndarray, hp: SvmParams = HPARAMS, n_classes: int = 10) -> dict:
    """Fit the SVM on a precomputed Gram matrix and keep what scoring needs.

    Parameters
    ----------
    x : np.ndarray, shape (n, H, W, 3) uint8
    y : np.ndarray, shape (n,) int
    hp : SvmParams
    n_classes : int
        Width of the score matrices (classes absent from ``y`` score below every present class).

    Returns
    -------
    dict of np.ndarray
        ``support_vectors`` (n_sv, H*W*3) uint8, ``dual_coef`` (n_cls - 1, n_sv) and ``intercept``
        (n_cls (n_cls - 1) / 2,) float64 in libsvm's sign convention, ``n_support`` (n_cls,),
        ``classes`` (n_cls,) int64, ``gamma``, ``C``, ``n_classes``.
    """
    from sklearn.svm import SVC  # here: scoring (predict.py) needs numpy only, and sklearn takes ~1 s to import

    xf = flatten(x)
    svc = SVC(kernel="precomputed", C=hp.C, break_ties=True, decision_function_shape="ovr")
    svc.fit(rbf_kernel(xf, xf, hp.gamma), y)
    # scikit-learn flips the sign of the public coefficients for two classes; undo it so one formula
    # (libsvm's) scores every case.
    sign = -1.0 if len(svc.classes_) == 2 else 1.0
    return {"support_vectors": np.asarray(x).reshape(len(x), -1)[svc.support_],
            "dual_coef": sign * svc.dual_coef_, "intercept": sign * svc.intercept_,
            "n_support": svc.n_support_.astype(np.int64), "classes": svc.classes_.astype(np.int64),
            "gamma": np.float64(hp.gamma), "C": np.float64(hp.C), "n_classes": np.int64(n_classes)}


def decision_scores(params: dict, x: np.ndarray) -> np.ndarray:
    """One-vs-rest decision scores of ``SVC(break_ties=True).decision_function``, for any clips.

    Parameters
    ----------
    params : dict
        From ``fit`` or ``load``.
    x : np.ndarray, shape (n, H, W, 3) or (n, H*W*3) uint8
        Images of the view the SVM was fitted on.

    Returns
    -------
    np.ndarray, shape (n, n_classes) float64
        Per class: one-vs-one votes plus a tie-breaking confidence in (-1/3, 1/3); the argmax is
        scikit-learn's ``predict``. Classes absent from training score -1.
    """
    K = rbf_kernel(flatten(x), flatten(params["support_vectors"]), float(params["gamma"]))
    coef, classes = params["dual_coef"], params["classes"]
    bounds = np.concatenate([[0], np.cumsum(params["n_support"])])
    m = len(classes)
    votes, confidence = np.zeros((len(K), m)), np.zeros((len(K), m))
    p = 0
    for i in range(m):
        si = slice(bounds[i], bounds[i + 1])
        for j in range(i + 1, m):
            sj = slice(bounds[j], bounds[j + 1])
            # libsvm's one-vs-one value: positive votes for class i
            dec = K[:, si] @ coef[j - 1, si] + K[:, sj] @ coef[i, sj] + params["intercept"][p]
            votes[:, i] += dec >= 0
            votes[:, j] += dec < 0
            confidence[:, i] += dec
            confidence[:, j] -= dec
            p += 1
    # scikit-learn's _ovr_decision_function: confidences squashed into (-1/3, 1/3) break vote ties only
    ovr = votes + confidence / (3 * (np.abs(confidence) + 1))
    scores = np.full((len(K), int(params["n_classes"])), -1.0)
    scores[:, classes] = ovr
    return scores


def save(path, params: dict) -> None:
    """Write ``params`` (from ``fit``) to an ``.npz`` file atomically."""
    atomic_write(path, lambda f: np.savez(f, **params))


def load(path) -> dict:
    """Read the arrays written by ``save``."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def params_problem(params: dict, n_classes: int, n_values: int):
    """What makes ``params`` unusable for an SVM of ``n_classes`` on ``n_values`` pixels, or None."""
    keys = ("support_vectors", "dual_coef", "intercept", "n_support", "classes", "gamma")
    if any(k not in params for k in keys):
        return f"lacks {', '.join(k for k in keys if k not in params)}"
    sv, coef, n_support, classes = (params[k] for k in ("support_vectors", "dual_coef", "n_support", "classes"))
    m = len(classes) if classes.ndim == 1 else -1
    shapes_ok = (sv.ndim == 2 and sv.shape[1] == n_values and sv.dtype == np.uint8
                 and coef.shape == (m - 1, len(sv)) and params["intercept"].shape == (m * (m - 1) // 2,)
                 and n_support.shape == (m,) and params["gamma"].size == 1)
    # a string or structured array of the right shape would fail at the first file, with a traceback
    kinds_ok = all(params[k].dtype.kind == "f" for k in ("dual_coef", "intercept", "gamma"))
    if not kinds_ok or n_support.dtype.kind not in "iu":
        return "dual coefficients, intercepts, gamma or support counts of the wrong type"
    if not shapes_ok or m < 2 or n_support.sum() != len(sv) or (n_support < 0).any():
        return f"support vectors {sv.shape}, dual coefficients {coef.shape} do not fit {n_values} pixels"
    if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() >= n_classes:
        return f"classes outside 0..{n_classes - 1}"
    if int(params.get("n_classes", n_classes)) != n_classes:
        return f"{int(params['n_classes'])} classes, config.json names {n_classes}"
    return None


class SvmFamily:
    """The ``models.family.Family`` of the report's SVMs: one fit, plain arrays in ``svm.npz``."""

    key = "scores"

    def files(self, hp) -> tuple:
        return ("svm.npz",)

    def inputs(self, hp) -> tuple:
        return (hp.view,)

    def embedder(self, hp, device="cpu", network=None):
        return None

    def fit(self, module, hp, job) -> Fitted:
        arr, split, n_classes = job.data.array(hp.view), job.split, len(job.data.classes)
        t0 = time.perf_counter()
        params = module.fit(arr[split.train], job.data.labels[split.train], hp, n_classes=n_classes)
        job.log(f"{job.label}: fitted on {len(split.train)} clips, {len(params['support_vectors'])} support "
                f"vectors ({time.perf_counter() - t0:.1f} s)")
        module.save(job.run_dir / "svm.npz", params)
        scores = module.decision_scores(params, arr[split.test]) if len(split.test) else np.zeros((0, n_classes))
        return Fitted(scores, {"n_support_vectors": int(len(params["support_vectors"]))})

    def scorer(self, module, run, embedder, device="cpu"):  # numpy: always on the CPU
        view = run.config["features"]["view"]
        width, height = images.VIEWS.get(str(view)[3:], (0, 0))
        n_classes = len(run.config["classes"])
        params = load_arrays(run, "svm.npz", module.load, lambda p: params_problem(p, n_classes, width * height * 3))
        return _SvmScorer(module, params, view)


SVM = SvmFamily()


class _SvmScorer:
    """The decision scores of a window's image view, weight 1."""

    per_block, embedder = False, None
    segments = whole_window

    def __init__(self, module, params, view):
        self.module, self.params, self.view = module, params, view

    def prepare(self, clip) -> None:
        clip.mel_db  # the costly part of its image view; the view itself is made when scored

    def __call__(self, clip) -> tuple:
        return self.module.decision_scores(self.params, clip.view(self.view)[None])[0], 1.0
