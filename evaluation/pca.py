"""The PCA figure: the first two principal components of a feature cache's 400x400x3 images."""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from features.cache import CacheError, open_cache
from models.runs import newest

from . import EvaluateError
from .figures import class_colors, save_figure
from .tables import PCA_REPORTED


def pca_scores(images, n_components=2, chunk_features=24_000):
    """Exact PCA of images via the centred Gram matrix, streamed in float32 feature chunks.

    With n samples and d = H*W*C features (1000 x 480000 for GTZAN's 400x400x3 images) the n x n Gram
    matrix of the centred data has the same non-zero spectrum as the d x d covariance. It is built in
    one pass over column chunks: each chunk holds every sample's slice of pixels, so its column means
    (and hence exact centring) are available inside the chunk, and nothing larger than one
    (n, chunk_features) float32 block is ever materialised. Pixels are scaled by 1/255 to [0, 1]. The
    total variance is accumulated in float64 in the same pass, so the explained-variance ratio is
    relative to all the data's variance, not to the components kept.

    Parameters
    ----------
    images : np.ndarray, shape (n, ...), uint8
        E.g. the cache's ``img400.npy`` memmap, (n, 400, 400, 3).
    n_components : int
    chunk_features : int
        Features per chunk; memory is about ``n * chunk_features * 4`` bytes plus the n x n Gram.

    Returns
    -------
    scores : np.ndarray, shape (n, n_components), float64
        Projections on the principal components (sign as ``eigh`` returns it).
    explained_variance : np.ndarray, shape (n_components,), float64
        Variance along each component (ddof=1), in (pixel/255)^2.
    total_variance : float
        Sum of all features' variances (ddof=1).
    """
    n = images.shape[0]
    if n < 2:
        raise EvaluateError(f"PCA needs at least 2 images, got {n}")
    flat = images.reshape(n, -1)
    gram = np.zeros((n, n), dtype=np.float64)
    total = 0.0
    for start in range(0, flat.shape[1], chunk_features):
        block = np.asarray(flat[:, start:start + chunk_features], dtype=np.float32)
        block *= np.float32(1 / 255)
        block -= block.mean(axis=0, dtype=np.float64).astype(np.float32)
        gram += block @ block.T
        total += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    scores = eigenvectors[:, order] * np.sqrt(eigenvalues)
    return scores, eigenvalues / (n - 1), total / (n - 1)


def _read_pca_cache(cache_dir):
    """img400 memmap, labels and class names of a feature cache, checked against each other.

    Read through ``features.cache.open_cache``, so the manifest, the labels and the array's shape,
    dtype and checksum are checked as for training; what the cache finds wrong is its one line.
    """
    try:
        cache = open_cache(cache_dir)
        images = cache.array("img400")
    except CacheError as e:
        raise EvaluateError(str(e)) from None
    labels = cache.labels
    # A manifest written by hand (no checksum) may record any shape: check what PCA relies on.
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise EvaluateError(f"{cache_dir}/img400.npy: {images.dtype}{images.shape} with {labels.shape} labels, "
                            f"expected uint8 (n, 400, 400, 3) and (n,)")
    classes = [str(c) for c in cache.classes or []]
    if len(classes) < 2:
        raise EvaluateError(f"{cache_dir}/manifest.json: 'classes' must list two or more names")
    return images, labels, classes, str(cache.manifest.get("data_name") or cache_dir.name)


def pca_figure(cache_dir, path):
    """PC1 vs PC2 of the cache's 400x400x3 images coloured by class; PVE of PC1+PC2 in the title.

    Returns
    -------
    dict
        ``data_name``, ``n``, ``cache_dir``, ``explained_variance_ratio`` (PC1, PC2), ``pve_percent``,
        ``figure``.
    """
    cache_dir = Path(cache_dir)
    images, labels, classes, data_name = _read_pca_cache(cache_dir)
    scores, variance, total = pca_scores(images)
    ratio = variance / total if total > 0 else np.zeros_like(variance)
    pve = 100.0 * float(ratio.sum())
    fig = Figure(figsize=(10, 7), layout="constrained")
    ax = fig.add_subplot()
    for c, (name, color) in enumerate(zip(classes, class_colors(len(classes)))):
        mask = labels == c
        if mask.any():
            ax.scatter(scores[mask, 0], scores[mask, 1], s=14, color=color, alpha=0.75, label=name)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.2f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.2f} % of variance)")
    # Outside the axes: with many classes a legend inside would hide the points.
    ax.legend(title="class", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
              ncol=1 if len(classes) <= 16 else 2)
    ax.grid(alpha=0.3)
    ax.set_title(f"PCA of the {'x'.join(map(str, images.shape[1:]))} images, pixels/255 — data {data_name}, "
                 f"n={len(labels)}\nPVE PC1+PC2 = {pve:.2f} % ({PCA_REPORTED})", fontsize=10)
    save_figure(fig, path)
    return {"data_name": data_name, "n": int(len(labels)), "cache_dir": str(cache_dir),
            "explained_variance_ratio": ratio.tolist(), "pve_percent": pve, "figure": str(path)}


def pca_cache_dir(runs, runs_root, data):
    """The feature cache a ``data`` run read, from its ``config.json`` (``data.cache_dir``).

    A relative path is tried as recorded (from where run_all.py ran), then beside ``runs_root``.
    Runs that recorded none fall back to ``cache/<data>``.
    """
    recorded = [r for r in runs if r.data == data and (r.config.get("data") or {}).get("cache_dir")]
    if not recorded:
        return Path("cache") / data
    recorded_dir = Path(newest(recorded).config["data"]["cache_dir"])
    for candidate in (recorded_dir, Path(runs_root).parent / recorded_dir):
        if (candidate / "manifest.json").exists():
            return candidate
    raise EvaluateError(f"--pca: the cache folder {recorded_dir} recorded by the {data} runs is gone; "
                        f"pass --cache DIR (or rebuild it: python -m features)")
