"""The input side of a pretrained music backbone (musicnn, Pons & Serra 2019), and what the cache
needs to know of the network itself.

musicnn reads 3-s patches of a log-compressed mel spectrogram of 16-kHz audio, time first
(``features.mel.musicnn_input``: n_fft 512, hop 256, 96 Slaney bands, ``log10(10000 x + 1)``)::

    audio at any rate --resample_poly--> 16 kHz --musicnn_input--> (T, 96) --cut--> (P, 187, 96)

Patches are consecutive and do not overlap, as musicnn's own extractor cuts them (its default);
frames after the last whole patch are dropped. A clip shorter than one patch is repeat-padded: its
frames are tiled up to 187, as musicnn was trained (``"pad_short": "repeat-pad"`` in its
config.json); musicnn's own extractor crashes on such clips. A 30-s window gives 10 patches.

The network lives in ``models/musicnn.py`` (this layer imports no model); the cache receives it as an
``Embedder``, a plain record of what it computes and of everything that decides its outputs.
"""

from typing import Callable, NamedTuple

import numpy as np

from . import mel

# Version of the patches `patches` returns (resampler, cut, padding): bump it with any change to
# them. The fingerprint of a cached embedding includes it, with the mel's own VERSION.
VERSION = 1
NAME = "musicnn"  # the cache array of musicnn's patch features
SR = mel.MUSICNN_SR
PATCH_FRAMES = 187  # musicnn's input: 3 s (librosa.time_to_frames(3, sr=16000, hop_length=256) + 1)
PATCH_SECONDS = PATCH_FRAMES * mel.MUSICNN_HOP / SR  # 2.992 s: consecutive patches start this far apart


class Embedder(NamedTuple):
    """A frozen network that turns log-mel patches into feature vectors, as the cache sees it.

    Attributes
    ----------
    name : str
        The cache array it fills (``"musicnn"``): shape (N, max_patches, n_features) float32.
    identity : str
        Everything besides the input that decides its outputs (the weights' sha256 and the network
        code's version): part of the array's fingerprint, so new weights recompute it.
    n_features : int
    embed : callable
        (P, PATCH_FRAMES, n_mels) float32 patches -> (P, n_features) float32.
    batch : int
        Patches per call that keep the network's device busy: a caller with many short clips groups
        at least this many patches into one call (``features.clips.embed_together``).
    """

    name: str
    identity: str
    n_features: int
    embed: Callable
    batch: int = 1


def resampled_length(n_samples, sr: int):
    """Samples that ``scipy.signal.resample_poly`` makes of ``n_samples`` at ``sr`` resampled to 16 kHz.

    Parameters
    ----------
    n_samples : int or np.ndarray of int
    sr : int
        Rate of the input in Hz.

    Returns
    -------
    int or np.ndarray of int
        ``ceil(n_samples * 16000 / sr)`` (480000 for 661500 samples at 22050 Hz).
    """
    return -(-np.asarray(n_samples) * SR // sr)


def n_patches(n_samples, sr: int):
    """Patches `patches` cuts from ``n_samples`` samples at ``sr``: at least 1 (a tiled short clip).

    Parameters
    ----------
    n_samples : int or np.ndarray of int
        Valid samples (>= 1).
    sr : int

    Returns
    -------
    int or np.ndarray of int
        10 for a 30-s clip, 1 for anything under 3 s.
    """
    frames = mel.n_frames(resampled_length(n_samples, sr), mel.MUSICNN_N_FFT, mel.MUSICNN_HOP)
    return np.maximum(frames // PATCH_FRAMES, 1)


def patches(y: np.ndarray, sr: int) -> np.ndarray:
    """musicnn's input patches of one clip.

    Parameters
    ----------
    y : np.ndarray, shape (n,) float32
        The clip's samples at ``sr`` (no padding: a cached window's zeros after the clip's end
        would make extra silent patches).
    sr : int
        Rate of ``y`` in Hz; resampled to 16 kHz with ``scipy.signal.resample_poly``, the resampler
        ``features.audio`` uses.

    Returns
    -------
    np.ndarray, shape (n_patches(n, sr), PATCH_FRAMES, 96) float32
        Consecutive, non-overlapping patches, time first.
    """
    if sr != SR:
        from scipy.signal import resample_poly  # imported when needed, as in features.audio

        g = np.gcd(SR, sr)
        y = resample_poly(y, SR // g, sr // g).astype(np.float32, copy=False)
    S = mel.musicnn_input(np.ascontiguousarray(y, dtype=np.float32))  # (T, 96)
    if len(S) < PATCH_FRAMES:
        S = np.resize(S, (PATCH_FRAMES, S.shape[1]))  # np.resize repeats the rows cyclically
    P = len(S) // PATCH_FRAMES
    return np.ascontiguousarray(S[:P * PATCH_FRAMES].reshape(P, PATCH_FRAMES, S.shape[1]))
