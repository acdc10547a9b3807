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
clip needs (``decision_scores``).
"""

import dataclasses

import numpy as np

from features import atomic_write


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
