"""One clip, from audio to model inputs: the same code whether a clip is cached or classified.

::

    audio file --decode--> 30-s window (n samples, the first ``valid`` of them audio, the rest zeros)
        --mel_db_of--> (n_mels, frames) dB mel --views_of--> image views (uint8)
        its audio, not its padding --clip_patches--> backbone patches --embedder--> embedding

``features.cache`` builds its rows with these functions, a batch of clips at a time (``decode``,
``mel_db_of``, ``views_of``, ``embed_clips``); ``predict.py`` cuts a stream of audio into windows
(``Windows``) and computes each window's inputs once for every model that reads them (``Clip``).

The window rule (``window``): a clip of up to ``LONG_SECONDS`` keeps its first 30 s (GTZAN's clips run
to 30.37 s and the report used their first 30 s); a longer file (a whole song) keeps its central
30 s, since a song's opening is often an intro unlike the rest of it; a shorter one is zero-padded.
Clips under ``MIN_SECONDS`` are not used.

``FeatureConfig`` holds the settings that decide the values; a run records them with its fingerprint
(``features.cache.feature_record``), and ``config_from_record`` reads them back.
"""

import dataclasses
import warnings
from functools import cached_property

import numpy as np

from . import audio, backbone, images, mel

MIN_SECONDS = 1.0  # shorter clips are skipped: under a second holds too little music to label
LONG_SECONDS = 31.0  # longer clips keep their central 30 s rather than their first
# The keys of a run's feature record (``features.cache.feature_record``) that are not settings
RECORD_EXTRAS = ("view", "fingerprint", "wave_scale", "network")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The settings that decide the cached values (defaults: the report's settings)."""

    sr: int = 22050
    duration: float = 30.0  # seconds kept per clip: 661500 samples
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = None  # None: sr / 2
    top_db: float = 80.0

    @property
    def n_samples(self) -> int:
        """Samples in a window: ``sr * duration`` rounded (661500)."""
        return round(self.sr * self.duration)


def config_from_record(record: dict) -> FeatureConfig:
    """The settings of a run's feature record (``features.cache.feature_record``), its other keys left out.

    Raises
    ------
    TypeError
        The record holds a setting this code does not know.
    """
    return FeatureConfig(**{k: v for k, v in record.items() if k not in RECORD_EXTRAS})


def window(y: np.ndarray, n_samples: int, sr: int) -> np.ndarray:
    """The clip's 30-s window: the first ``n_samples`` (central ones beyond ``LONG_SECONDS``), zero-padded.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    n_samples : int
    sr : int

    Returns
    -------
    np.ndarray, shape (n_samples,), y's dtype
    """
    start = (len(y) - n_samples) // 2 if len(y) > LONG_SECONDS * sr else 0
    y = y[start:start + n_samples]
    return np.concatenate([y, np.zeros(n_samples - len(y), y.dtype)]) if len(y) < n_samples else y


def decode(track, config: FeatureConfig, wave_dtype):
    """Decode one track into its window.

    Parameters
    ----------
    track : features.dataset.Track
    config : FeatureConfig
    wave_dtype : np.int16 or np.float32
        np.int16: the file is 16-bit PCM at ``config.sr``, read as its exact samples (5x faster
        than a float decode); np.float32: decoded, downmixed and resampled to ``config.sr``.

    Returns
    -------
    window : np.ndarray, shape (config.n_samples,), wave_dtype; None when the track is skipped
    length : int
        The clip's true length in samples at ``config.sr`` (0 when it does not decode).
    note : str
        ``"ok"``, or the decoder's warnings, or why the track is skipped (one line).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if wave_dtype == np.int16:
                y = audio.load_pcm16(track.path, None)
            else:
                y = audio.load(track.path, sr=config.sr, duration=None)
        except audio.AudioError as err:
            return None, 0, str(err)
    if len(y) < MIN_SECONDS * config.sr:
        return None, len(y), f"{track.path}: {len(y) / config.sr:.2f} s long, under the {MIN_SECONDS:g}-s minimum"
    return window(y, config.n_samples, config.sr), len(y), "; ".join(str(w.message) for w in caught) or "ok"


def mel_db_of(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The dB mel of one window, shape (n,) -> (n_mels, frames), or of a batch, (B, n) -> (B, n_mels,
    frames), float32, with ``config``'s settings (``features.mel.mel_db``)."""
    return mel.mel_db(y, sr=config.sr, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
                      fmin=config.fmin, fmax=config.fmax, top_db=config.top_db)


def views_of(S_db: np.ndarray, views, config: FeatureConfig) -> dict:
    """The image views ``views`` (names from ``images.VIEWS``) of one clip's dB mel (n_mels, frames):
    view name -> uint8 (height, width, 3), the top ``config.top_db`` dB on the colormap."""
    return images.image_views(S_db, views, config.top_db)


def n_valid_frames(valid_samples, config: FeatureConfig, n_total_frames: int):
    """Frames of a window's dB mel that hold audio, as training and prediction count them.

    Parameters
    ----------
    valid_samples : int or np.ndarray of int
        Samples of the window (or of each window) that are audio, not padding.
    config : FeatureConfig
    n_total_frames : int
        Frames of the whole window's mel (1292).

    Returns
    -------
    int or np.ndarray of int
        ``min(mel.n_frames(valid_samples), n_total_frames)``, elementwise.
    """
    return np.minimum(mel.n_frames(valid_samples, config.n_fft, config.hop_length), n_total_frames)


def clip_patches(y: np.ndarray, valid: int, sr: int) -> np.ndarray:
    """Backbone patches (P, ``backbone.PATCH_FRAMES``, 96) float32 of a window's first ``valid`` samples
    at ``sr``: the clip's own audio, since a window's padding would make silent patches."""
    return backbone.patches(y[:int(valid)], sr)


def embed_clips(embedder, waves: np.ndarray, lengths, sr: int, width: int) -> np.ndarray:
    """Embed a batch of windows, all their patches in one call of the network.

    Parameters
    ----------
    embedder : features.backbone.Embedder
    waves : np.ndarray, shape (B, n) float32
        The windows at ``sr``.
    lengths : array of int, shape (B,)
        Each clip's true length in samples (patches are cut from its audio only, ``clip_patches``).
    sr : int
    width : int
        Patches per row kept (``backbone.n_patches`` of a whole window).

    Returns
    -------
    np.ndarray, shape (B, width, embedder.n_features) float32
        Each clip's patch features, zero after its last patch.
    """
    out = np.zeros((len(waves), width, embedder.n_features), np.float32)
    per_clip = [clip_patches(y, n, sr) for y, n in zip(waves, lengths)]
    for i, rows in enumerate(_embed_each(embedder, per_clip)):
        k = min(len(rows), width)
        out[i, :k] = rows[:k]
    return out


def _embed_each(embedder, per_clip: list) -> list:
    """Each clip's (P_i, n_features) features from one call of ``embedder`` on all their patches."""
    features = embedder.embed(np.concatenate(per_clip))
    return np.split(features, np.cumsum([len(p) for p in per_clip])[:-1])


def embed_together(clip_list, embedder) -> None:
    """Embed the patches of every clip in ``clip_list`` that ``embedder`` has not embedded yet in one
    call, so that short clips fill the network's batch (``Embedder.batch``) together; each clip's
    ``embedding(embedder)`` then returns its own rows without computing them again."""
    todo = [c for c in clip_list if embedder.name not in c._embedded]
    if todo:
        for c, rows in zip(todo, _embed_each(embedder, [c.patches for c in todo])):
            c._embedded[embedder.name] = rows


class Clip:
    """One window of audio and its model inputs, each computed at most once (the models of an
    ensemble that read the same input share it).

    Parameters
    ----------
    y : np.ndarray, shape (config.n_samples,) float32
        The window at ``config.sr``.
    valid : int
        How many of its samples are audio rather than padding.
    config : FeatureConfig
    start : int
        The sample at which the window begins in its file (``Windows.start``), at ``config.sr``.
    """

    def __init__(self, y: np.ndarray, valid: int, config: FeatureConfig, start: int = 0):
        self.y, self.valid, self.config, self.start = y, valid, config, start
        self._embedded, self._views = {}, {}

    @cached_property
    def patches(self) -> np.ndarray:
        """(P, ``backbone.PATCH_FRAMES``, 96) float32 backbone patches of the window's audio (``clip_patches``)."""
        return clip_patches(self.y, self.valid, self.config.sr)

    def embedding(self, embedder) -> np.ndarray:
        """(P, n_features) float32: ``embedder`` on the patches of the window's audio (not its padding)."""
        if embedder.name not in self._embedded:
            self._embedded[embedder.name] = embedder.embed(self.patches)
        return self._embedded[embedder.name]

    @cached_property
    def mel_db(self) -> np.ndarray:
        """(n_mels, frames) float32 dB mel of the whole window (``mel_db_of``)."""
        return mel_db_of(self.y, self.config)

    @property
    def n_frames(self) -> int:
        """Frames of ``mel_db`` that hold audio (``n_valid_frames``)."""
        return n_valid_frames(self.valid, self.config, self.mel_db.shape[1])

    def view(self, name: str) -> np.ndarray:
        """The cache array ``name`` (``wave``, ``mel_db``, ``img400``, ...) of this window (each image
        view computed once)."""
        if name == "wave":
            return self.y
        if name == "mel_db":
            return self.mel_db
        if name not in self._views:
            self._views[name] = views_of(self.mel_db, (name[3:],), self.config)[name[3:]]
        return self._views[name]


class Windows:
    """The windows of a stream of audio chunks; ``samples`` counts every sample read.

    Consecutive ``n``-sample windows; past the last full one, a rest of at least ``min_rest`` samples
    makes one more window: with ``align_end`` (and a full window before it) the ``n`` samples that end
    at the stream's end, overlapping the window before, else the rest zero-padded. A shorter rest is
    dropped.

    Iterating yields ``(window, valid)``: an ``n``-sample float32 array (read-only to the caller) and
    how many of its samples are audio rather than padding. Meanwhile ``start`` is the sample at which
    the window last yielded begins in the stream, and ``peak`` the largest magnitude read so far.
    """

    def __init__(self, chunks, n: int, min_rest: int, align_end: bool):
        self.chunks, self.n, self.min_rest, self.align_end = chunks, n, min_rest, align_end
        self.samples, self.start, self.peak = 0, 0, 0.0

    def __iter__(self):
        buf, fill, last_full = np.zeros(self.n, np.float32), 0, None
        for chunk in self.chunks:
            self.samples += len(chunk)
            if len(chunk):
                self.peak = max(self.peak, float(np.abs(chunk).max()))
            while len(chunk):
                take = min(self.n - fill, len(chunk))
                buf[fill:fill + take], chunk = chunk[:take], chunk[take:]
                fill += take
                if fill == self.n:
                    self.start = self.samples - len(chunk) - self.n
                    yield buf, self.n
                    last_full, buf, fill = buf, np.zeros(self.n, np.float32), 0
        if fill < self.min_rest:
            return
        if self.align_end and last_full is not None:
            self.start = self.samples - self.n
            yield np.concatenate([last_full[fill:], buf[:fill]]), self.n
        else:
            self.start = self.samples - fill
            yield buf, fill  # zero beyond fill
