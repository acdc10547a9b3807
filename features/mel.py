"""Mel spectrograms in numba: librosa's dB mel to within 1e-3 dB, and musicnn's input.

``mel_db(y)`` computes what

    librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512))

computes in librosa 0.11 (centred frames with zero padding, periodic Hann window, power 2, Slaney mel
scale and area norm, ``ref=1.0, amin=1e-10, top_db=80``), for one clip or a batch of clips, with
``top_db`` applied per clip. A 30-s GTZAN clip (661500 samples) gives a float32 (128, 1292) array.
``pad_mode="reflect"`` centres the frames on a signal extended by reflection instead (librosa's
default before 0.10).

``mel_power(y)`` is the same spectrogram before the dB step, ``librosa.feature.melspectrogram``;
both run the same kernel. ``musicnn_input(y)`` is the input of the pretrained musicnn taggers
(Pons & Serra 2019) for 16-kHz audio: ``log_compress`` (``log10(10000 S + 1)`` after a float16
cast, as musicnn computes it) of ``mel_power`` at ``MUSICNN_*`` settings with reflect padding, what
librosa 0.6/0.7 computed in 2019, transposed to (n_frames, 96): (1876, 96) for 30 s.

How it is fast (one fused pass per block of frames, all float32):

- frames are windowed straight into the FFT input buffer, 32 frames at a time, and transformed together
  by rocket-fft's low-level ``r2c`` (DUCC0, the library behind ``scipy.fft``), which vectorises
  across frames;
- the FFT writes its output bins x frames, so the power and the mel sums run with one frame per
  SIMD lane; each FFT bin feeds at most two Slaney triangles, so the mel projection loops only over
  the bins inside each band (about 2 x 1025 products per frame instead of 128 x 1025);
- the samples are checked (NaN, inf, huge) inside the kernel as each block first reads them;
- the dB conversion (skipped by ``mel_power``) uses a vectorisable logarithm (exponent from the
  float bits, atanh series in float64 for the mantissa), accurate to about 4e-6 dB;
- clips, or blocks of frames of one clip, are spread over ``numba.get_num_threads()`` threads
  (set it with ``numba.set_num_threads``); results do not depend on the thread count. When other
  processes keep the cores busy, numba's default OpenMP layer spins while it waits and many small
  calls can run slower on 2 threads than on 1 (measured 2-3x); ``OMP_WAIT_POLICY=passive`` or
  ``NUMBA_THREADING_LAYER=workqueue`` in the environment avoid that.

The FFT runs in float32 where librosa's runs in float64 (its window is float64). The rounding of a
float32 FFT is about 1e-7 of a frame's energy, so bands far below their frame's loudest bins carry
a relative error that grows as they get quieter; on real music and on the test signals the
difference stays below 1e-3 dB for every band above the ``top_db`` floor (tests/test_mel.py), and
``mel_power`` stays within 1e-3 of librosa's, relative to each band, for every band within 80 dB of
its clip's loudest (measured at musicnn's settings on 408 GTZAN clips: typically 3e-5, at most 6e-4
in librosa's last frame, which it computes apart; tests/test_mel_musicnn.py).
"""
import functools
import math

import numba
import numpy as np
import rocket_fft  # registers DUCC0's symbols with LLVM; provides the low-level r2c used below
from numba import njit, prange

# Version of the values mel_db returns: bump it with any change that alters them (never for a
# speed-only rewrite). The cache's fingerprints include it, so caches rebuild exactly when it moves.
VERSION = 1

# Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0

# 32 frames of 2048 float32 samples (256 KiB in, 256 KiB out) stay in a core's L2 cache, and the
# FFT's SIMD lanes are filled across frames (8 to 128 frames time the same FFT to within 5 %).
FRAMES_PER_BLOCK = 32

# Audio is within [-1, 1]; beyond 1e12 a frame's float32 power, up to (n_fft * peak)^2, could
# overflow, and the logarithm below assumes finite powers.
_MAX_SAMPLE = 1e12

# How centred frames are padded past the signal's ends, named as in np.pad and librosa.
PAD_MODES = ("constant", "reflect")

# musicnn's analysis (Pons & Serra 2019, musicnn/configuration.py): 16-kHz audio, 512-sample frames
# every 256 samples (32 ms every 16 ms), 96 Slaney mel bands from 0 Hz to 8 kHz.
MUSICNN_SR = 16000
MUSICNN_N_FFT = 512
MUSICNN_HOP = 256
MUSICNN_N_MELS = 96

# float16's largest value is 65504 and its last step 32: float32 values from 65504 + 32 / 2 on
# round to inf in float16 (round half to even).
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_INF_FROM = _FLOAT16_MAX + 16.0

_LN2 = math.log(2.0)
_DB_PER_NEPER = 10.0 / math.log(10.0)  # 10 log10(x) = _DB_PER_NEPER * ln(x)


def hz_to_mel(frequencies):
    """Frequencies in Hz to Slaney mels.

    Parameters
    ----------
    frequencies : float or np.ndarray
        Frequencies in Hz.

    Returns
    -------
    np.ndarray
        float64 mels, same shape as ``frequencies``.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    linear = f / _F_SP
    # np.maximum keeps log() away from 0 Hz; those entries take the linear branch anyway.
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mels):
    """Slaney mels to frequencies in Hz (inverse of `hz_to_mel`).

    Parameters
    ----------
    mels : float or np.ndarray
        Mels.

    Returns
    -------
    np.ndarray
        float64 frequencies in Hz, same shape as ``mels``.
    """
    m = np.asarray(mels, dtype=np.float64)
    linear = _F_SP * m
    logarithmic = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, logarithmic, linear)


def mel_frequencies(n_mels=128, fmin=0.0, fmax=11025.0):
    """Frequencies in Hz of ``n_mels`` points evenly spaced on the Slaney mel scale.

    Parameters
    ----------
    n_mels : int
        Number of points.
    fmin, fmax : float
        First and last point in Hz.

    Returns
    -------
    np.ndarray
        (n_mels,) float64 Hz.
    """
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


def mel_filterbank(sr=22050, n_fft=2048, n_mels=128, fmin=0.0, fmax=None):
    """Slaney mel filterbank: triangles on the Slaney mel scale, each scaled to unit area in Hz.

    Same weights as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
    fmax=fmax)`` (htk=False, norm='slaney') to float32 rounding.

    Parameters
    ----------
    sr : float
        Sample rate in Hz.
    n_fft : int
        FFT length in samples.
    n_mels : int
        Number of bands.
    fmin, fmax : float
        Lowest and highest band edge in Hz; ``fmax=None`` means ``sr / 2``.

    Returns
    -------
    np.ndarray
        (n_mels, 1 + n_fft // 2) float32 weights; row m times a power spectrum gives band m.
    """
    sr, n_fft, n_mels, fmin, fmax = _check_mel_params(sr, n_fft, n_mels, fmin, fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    # Band m rises from edges[m] to edges[m + 1] and falls to edges[m + 2].
    edges = mel_frequencies(n_mels + 2, fmin, fmax)
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_freqs[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def n_frames(n_samples, n_fft=2048, hop_length=512):
    """Number of centred frames `mel_db` and `mel_power` return for ``n_samples`` samples.

    Parameters
    ----------
    n_samples : int
        Signal length in samples (>= 1).
    n_fft, hop_length : int
        Frame length and hop in samples.

    Returns
    -------
    int
        ``1 + n_samples // hop_length`` for even ``n_fft`` (1292 for 661500 samples).
    """
    return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def mel_power(y, sr=22050, n_fft=2048, hop_length=512, n_mels=128, fmin=0.0, fmax=None,
              pad_mode="constant"):
    """Power mel spectrogram of one clip or a batch of clips, as librosa 0.11 computes it.

    Computes ``librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length,
    n_mels=n_mels, fmin=fmin, fmax=fmax, pad_mode=pad_mode)``: centred frames (the signal is padded
    by ``n_fft // 2`` on both sides as ``pad_mode`` says), periodic Hann window, squared magnitude,
    Slaney mel filterbank (`mel_filterbank`). Within ``1e-3 |S| + 1e-10 max(S)`` of librosa's S,
    per clip (its FFT is float64, ours float32: the quieter a band against its frame, the larger
    its relative error). Runs on ``numba.get_num_threads()`` threads.

    Parameters
    ----------
    y : np.ndarray
        (n_samples,) one clip or (n_clips, n_samples) a batch; float32, or float64 (rounded to
        float32 first). Non-empty, finite, |y| <= 1e12.
    sr : float
        Sample rate in Hz.
    n_fft, hop_length : int
        Frame length and hop in samples.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Band edges in Hz; ``fmax=None`` means ``sr / 2``.
    pad_mode : {"constant", "reflect"}
        Padding past the ends: zeros, or the signal reflected about its first and last samples
        (``np.pad``'s "reflect", repeated for a signal shorter than ``n_fft // 2 + 1``).

    Returns
    -------
    np.ndarray
        float32 power (squared amplitude of the float samples, weighted by the filterbank),
        (n_mels, n_frames) for one clip or (n_clips, n_mels, n_frames) for a batch, with
        ``n_frames = n_frames(n_samples, n_fft, hop_length)``: (128, 1292) for 661500 samples.

    Raises
    ------
    ValueError
        Empty, non-finite, huge or wrongly shaped ``y``, or a parameter out of range.
    TypeError
        ``y`` is not a float32 or float64 array.
    """
    out = _mel_spectrogram("mel_power", y, sr, n_fft, hop_length, n_mels, fmin, fmax, pad_mode)
    return out[0] if np.ndim(y) == 1 else out


def mel_db(y, sr=22050, n_fft=2048, hop_length=512, n_mels=128, fmin=0.0, fmax=None,
           ref=1.0, amin=1e-10, top_db=80.0, pad_mode="constant"):
    """Log-power mel spectrogram of one clip or a batch of clips, as librosa 0.11 computes it.

    `mel_power` (frames centred on the signal padded as ``pad_mode`` says, periodic Hann window,
    squared magnitude, Slaney mel filterbank) converted to
    ``10 log10(max(amin, S)) - 10 log10(max(amin, |ref|))``, floored at ``top_db`` below its
    maximum, per clip: ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, ...,
    pad_mode=pad_mode), ref=ref, amin=amin, top_db=top_db)``. Runs on ``numba.get_num_threads()``
    threads.

    Parameters
    ----------
    y, sr, n_fft, hop_length, n_mels, fmin, fmax
        As in `mel_power`.
    ref : float
        Reference power (0 dB); its absolute value is used, as in librosa.
    amin : float
        Smallest power before the logarithm; at least the smallest normal float32 (1.2e-38).
    top_db : float or None
        Floor at ``max - top_db`` dB per clip; None disables the floor.
    pad_mode : {"constant", "reflect"}
        Padding past the ends, as in `mel_power`: zeros (librosa 0.11's default) or reflection
        (librosa's default before 0.10).

    Returns
    -------
    np.ndarray
        float32 dB, (n_mels, n_frames) for one clip or (n_clips, n_mels, n_frames) for a batch,
        with ``n_frames = n_frames(n_samples, n_fft, hop_length)``: (128, 1292) for 661500 samples.

    Raises
    ------
    ValueError, TypeError
        As `mel_power`; ValueError also for ``amin`` or ``top_db`` out of range.
    """
    _check_db_params(amin, top_db)
    ref_db = _DB_PER_NEPER * math.log(max(float(amin), abs(float(ref))))
    out = _mel_spectrogram("mel_db", y, sr, n_fft, hop_length, n_mels, fmin, fmax, pad_mode,
                           db=(np.float32(amin), ref_db))
    if top_db is not None:
        # numpy's SIMD max and maximum: ~0.07 ms per clip, not worth a parallel region.
        floor = out.max(axis=(1, 2), keepdims=True) - np.float32(top_db)
        np.maximum(out, floor, out=out)
    return out[0] if np.ndim(y) == 1 else out


def log_compress(S):
    """musicnn's compression of a power mel: ``log10(10000 S + 1)`` after a float16 cast of S.

    musicnn rounds the power to float16 (``S.astype(np.float16)``) and then computes
    ``np.log10(10000 * S + 1)``. Under numpy 1.x (2019's) value-based casting gave the Python int
    10000 its smallest dtype, uint16 (an int up to 255 would have been uint8, keeping float16),
    and uint16 promotes float16 to float32: the product, the sum and the logarithm ran in
    float32, with no overflow (checked: bit-identical to this function under numpy 1.26).
    numpy >= 2 (NEP 50) keeps them float16, where ``10000 S`` overflows to inf from S = 6.55 on
    (0 to 3.4 % of the bins of a 30-s GTZAN clip) and the logarithm keeps 3 digits. This
    computes numpy 1.x's float32 values, whichever numpy runs it.

    Parameters
    ----------
    S : np.ndarray
        (...) power mel (`mel_power`), float32 (other float dtypes are rounded to float32 first);
        every value within [0, 65504] (float16's range; up to 65520 rounds to 65504). Audio within
        [-1, 1] at musicnn's settings gives powers below 3146 (largest filterbank weight 0.032
        times Parseval's bound 512 x 192 for the Hann window).

    Returns
    -------
    np.ndarray
        float32, same shape as ``S``; 0 for S = 0, about 4 + log10(S) for S >> 1e-4.

    Raises
    ------
    ValueError
        ``S`` holds a NaN, a negative power or one that float16 rounds to inf (>= 65520): there
        musicnn's input would be NaN or inf, which its network turns into NaN tags. This is
        raised rather than clamped: such powers need samples beyond 4.5 times full scale.
    """
    S = np.asarray(S, dtype=np.float32)
    # Checked in float32: numpy's float16 min and max take 40x longer (0.7 ms per 30-s clip).
    if S.size and not (S.min() >= 0 and S.max() < _FLOAT16_INF_FROM):
        raise ValueError(f"log_compress: S must be powers within [0, {_FLOAT16_MAX:.0f}] "
                         f"(float16's range, musicnn's cast), got [{S.min():.3g}, {S.max():.3g}]")
    x = S.astype(np.float16).astype(np.float32)
    x *= np.float32(10000)
    x += np.float32(1)
    return np.log10(x, out=x)


def musicnn_input(y, sr=MUSICNN_SR):
    """Input of the pretrained musicnn taggers (Pons & Serra 2019) for audio at 16 kHz.

    ``log_compress(mel_power(y, 16000, 512, 256, 96, pad_mode="reflect"))`` with time first: what
    musicnn's ``extractor.batch_data`` computes with librosa 0.6/0.7 (centred frames on the
    reflect-padded signal, periodic Hann window, power 2, 96 Slaney bands with area norm from 0 to
    8 kHz, no dB) before cutting it into patches. Within 4.3e-4 of that: one float16 step,
    ``log10(1 + 2**-10)``, where our power and librosa's round to neighbouring float16 values
    (0.04 % of the bins of real music).

    Parameters
    ----------
    y : np.ndarray
        (n_samples,) one clip or (n_clips, n_samples) a batch, float32 (or float64) audio within
        [-1, 1] sampled at 16 kHz (resample first: no resampler here).
    sr : int
        Sample rate of ``y`` in Hz; must be `MUSICNN_SR`.

    Returns
    -------
    np.ndarray
        float32 C-contiguous, (n_frames, 96) for one clip or (n_clips, n_frames, 96) for a batch,
        ``n_frames = n_frames(n_samples, 512, 256)``: (1876, 96) for 30 s (480000 samples).

    Raises
    ------
    ValueError
        ``sr`` is not 16000, or ``y`` is not usable audio (see `mel_power`, `log_compress`).
    TypeError
        ``y`` is not a float32 or float64 array.
    """
    if sr != MUSICNN_SR:
        raise ValueError(f"musicnn_input: musicnn takes {MUSICNN_SR}-Hz audio; resample y first "
                         f"(got sr={sr})")
    S = mel_power(y, MUSICNN_SR, MUSICNN_N_FFT, MUSICNN_HOP, MUSICNN_N_MELS, pad_mode="reflect")
    return np.ascontiguousarray(np.swapaxes(log_compress(S), -1, -2))


def _mel_spectrogram(caller, y, sr, n_fft, hop_length, n_mels, fmin, fmax, pad_mode, db=None):
    """`mel_power`'s checks and kernel call, for ``caller``'s messages.

    Returns
    -------
    np.ndarray
        (n_clips, n_mels, n_frames) float32 power mel, or with ``db=(amin, ref_db)`` (an
        np.float32 and a float) its unfloored ``10 log10(max(amin, S)) - ref_db``.
    """
    clips = _as_clips(caller, y)
    _check_framing(caller, hop_length, pad_mode)
    window, bands = _analysis_setup(*_check_mel_params(sr, n_fft, n_mels, fmin, fmax))
    n_out = n_frames(clips.shape[1], window.shape[0], int(hop_length))
    out = np.empty((clips.shape[0], bands[0].shape[0], n_out), dtype=np.float32)
    n_tasks = clips.shape[0] * -(-n_out // FRAMES_PER_BLOCK)
    # The samples' check runs inside the kernel, on data it reads anyway: a separate numpy min and
    # max cost 0.18 ms per 30-s clip (6 % of the total). Bad samples give garbage, never a crash,
    # and raise here before anything is returned.
    peak_bits = np.zeros(n_tasks, dtype=np.int32)
    amin, ref_db = db if db is not None else (np.float32(1.0), 0.0)  # unused without dB
    # No more threads than blocks of frames: a short clip should not wait on idle threads.
    _mel_blocks(clips, window, int(hop_length), pad_mode == "reflect", *bands, db is not None,
                amin, ref_db, min(numba.get_num_threads(), n_tasks), peak_bits, out)
    _check_peak(caller, peak_bits.max().view(np.float32))
    return out


def _as_clips(caller, y):
    """(n_clips, n_samples) C-contiguous float32 view or copy of ``caller``'s ``y``, checked."""
    y = np.asarray(y)
    if y.dtype not in (np.float32, np.float64):
        raise TypeError(f"{caller}: y must be float32 or float64 audio, got dtype {y.dtype}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{caller}: y must have shape (n_samples,) or (n_clips, n_samples), "
                         f"got {y.shape}")
    if y.size == 0:
        raise ValueError(f"{caller}: y is empty (shape {y.shape})")
    return np.ascontiguousarray(y.reshape(-1, y.shape[-1]), dtype=np.float32)


def _check_framing(caller, hop_length, pad_mode):
    """Raise ValueError for a hop or padding mode out of range."""
    if int(hop_length) != hop_length or hop_length < 1:
        raise ValueError(f"{caller}: hop_length must be a positive integer, got {hop_length}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"{caller}: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")


def _check_db_params(amin, top_db):
    """Raise ValueError for a `mel_db` amin or top_db out of range."""
    if not amin >= np.finfo(np.float32).tiny:
        raise ValueError(f"mel_db: amin must be at least {np.finfo(np.float32).tiny:.3g} "
                         f"(smallest normal float32), got {amin}")
    if top_db is not None and not top_db >= 0:
        raise ValueError(f"mel_db: top_db must be >= 0 or None, got {top_db}")


def _check_peak(caller, peak):
    """Raise ValueError unless the largest ``|sample|`` (NaN if any sample is NaN) is usable."""
    if not math.isfinite(peak):
        raise ValueError(f"{caller}: y contains NaN or infinite samples")
    if peak > _MAX_SAMPLE:
        raise ValueError(f"{caller}: y has samples up to {peak:.3g}, beyond {_MAX_SAMPLE:.0e}: "
                         f"float32 power would overflow")


def _check_mel_params(sr, n_fft, n_mels, fmin, fmax):
    """Validated (sr, n_fft, n_mels, fmin, fmax) with ``fmax=None`` resolved to ``sr / 2``."""
    if not sr > 0:
        raise ValueError(f"mel: sr must be positive, got {sr}")
    if int(n_fft) != n_fft or n_fft < 2:
        raise ValueError(f"mel: n_fft must be an integer >= 2, got {n_fft}")
    if int(n_mels) != n_mels or n_mels < 1:
        raise ValueError(f"mel: n_mels must be a positive integer, got {n_mels}")
    fmax = sr / 2.0 if fmax is None else fmax
    if not 0.0 <= fmin < fmax:
        raise ValueError(f"mel: need 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    return float(sr), int(n_fft), int(n_mels), float(fmin), float(fmax)


@functools.lru_cache(maxsize=8)
def _analysis_setup(sr, n_fft, n_mels, fmin, fmax):
    """Window and sparse filterbank for one parameter set, built once (they cost ~3 ms per call).

    Returns
    -------
    window : np.ndarray
        (n_fft,) float32 periodic Hann window, read-only.
    bands : tuple of np.ndarray
        `_sparse_bands` of `mel_filterbank`, read-only.
    """
    window = _hann(n_fft)
    bands = _sparse_bands(mel_filterbank(sr, n_fft, n_mels, fmin, fmax))
    for array in (window, *bands):
        array.flags.writeable = False
    return window, bands


def _hann(n_fft):
    """(n_fft,) float32 periodic Hann window (scipy's ``get_window('hann', n_fft)``)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _sparse_bands(weights):
    """Band-wise compressed filterbank: the bins each band covers and their weights.

    Parameters
    ----------
    weights : np.ndarray
        (n_mels, n_bins) float32 filterbank.

    Returns
    -------
    band_start : np.ndarray
        (n_mels,) int64; the first bin band m covers (0 if it covers none).
    band_offset : np.ndarray
        (n_mels + 1,) int64; band m's weights are ``band_weights[band_offset[m]:band_offset[m+1]]``,
        for the bins from ``band_start[m]`` on.
    band_weights : np.ndarray
        (band_offset[-1],) float32.
    """
    nonzero = weights != 0
    any_bin = nonzero.any(axis=1)
    band_start = np.where(any_bin, nonzero.argmax(axis=1), 0).astype(np.int64)
    last = weights.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    band_stop = np.where(any_bin, last, 0).astype(np.int64)
    band_offset = np.zeros(weights.shape[0] + 1, dtype=np.int64)
    np.cumsum(band_stop - band_start, out=band_offset[1:])
    band_weights = np.concatenate(
        [weights[m, band_start[m]:band_stop[m]] for m in range(weights.shape[0])])
    return band_start, band_offset, band_weights.astype(np.float32)


@njit(cache=True, parallel=True, error_model="numpy")
def _mel_blocks(clips, window, hop_length, reflect, band_start, band_offset, band_weights, to_db,
                amin, ref_db, n_threads, peak_bits, out):
    """Power or unfloored dB mel spectrograms of a batch, block of frames by block of frames.

    Parameters
    ----------
    clips : np.ndarray
        (n_clips, n_samples) float32 C-contiguous audio.
    window : np.ndarray
        (n_fft,) float32 analysis window.
    hop_length : int
        Hop in samples.
    reflect : bool
        Pad past the ends by reflection (`_window_reflected`) instead of zeros.
    band_start, band_offset, band_weights : np.ndarray
        Sparse filterbank from `_sparse_bands`.
    to_db : bool
        Convert the power to dB (`_power_to_db`); False leaves the power.
    amin : np.float32
        Smallest power before the logarithm (used with ``to_db``).
    ref_db : float
        ``10 log10(max(amin, |ref|))``, subtracted from every value (used with ``to_db``).
    n_threads : int
        Threads to use; passed in because ``numba.get_num_threads()`` inside a function prevents
        caching it.
    peak_bits : np.ndarray
        (n_clips * n_blocks,) int32, filled with `_abs_max_bits` of the samples each block is the
        first to read: their maximum is that of the whole batch.
    out : np.ndarray
        (n_clips, n_mels, n_frames) float32, filled with power or dB.
    """
    n_clips, n_samples = clips.shape
    n_fft = window.shape[0]
    n_bins = n_fft // 2 + 1
    n_mels = band_start.shape[0]
    frames_total = out.shape[2]
    n_blocks = -(-frames_total // FRAMES_PER_BLOCK)
    n_tasks = n_clips * n_blocks
    # One buffer set per thread, reused for every block that thread takes (round robin), so nothing
    # is allocated per frame; blocks all cost the same, so a static split balances the load.
    for thread in prange(n_threads):
        frames = np.zeros((FRAMES_PER_BLOCK, n_fft), dtype=np.float32)
        # Bins x frames: the FFT writes its output transposed at no cost (measured), and in this
        # layout the power and the mel sums run along frames, which vectorises.
        spectrum = np.empty((n_bins, FRAMES_PER_BLOCK), dtype=np.complex64)
        power = np.empty((n_bins, FRAMES_PER_BLOCK), dtype=np.float32)
        mel = np.empty((n_mels, FRAMES_PER_BLOCK), dtype=np.float32)
        mantissa = np.empty(n_mels * FRAMES_PER_BLOCK, dtype=np.float32)
        exponent = np.empty(n_mels * FRAMES_PER_BLOCK, dtype=np.int32)
        fft_axes = np.array([1])
        for task in range(thread, n_tasks, n_threads):
            c = task // n_blocks
            first = (task % n_blocks) * FRAMES_PER_BLOCK
            count = min(FRAMES_PER_BLOCK, frames_total - first)
            new = _first_sample(first, hop_length, n_fft, n_samples)
            last = _first_sample(first + FRAMES_PER_BLOCK, hop_length, n_fft, n_samples)
            if first + FRAMES_PER_BLOCK >= frames_total:
                last = n_samples
            peak_bits[task] = _abs_max_bits(clips[c, new:last])
            for j in range(FRAMES_PER_BLOCK):
                if j < count:
                    _frame(clips[c], (first + j) * hop_length - n_fft // 2, window, reflect,
                           frames[j])
                else:
                    frames[j, :] = 0.0
            rocket_fft.r2c(frames, spectrum.T, fft_axes, True, 1.0, 1)
            _power(spectrum, power)
            _mel_bands(power, band_start, band_offset, band_weights, mel)
            if to_db:
                _power_to_db(mel.reshape(n_mels * FRAMES_PER_BLOCK), amin, ref_db, mantissa,
                             exponent)
            _store(mel, count, out[c, :, first:first + count])


@njit(cache=True, error_model="numpy")
def _first_sample(frame, hop_length, n_fft, n_samples):
    """First sample of ``frame``'s centred window, clipped to ``[0, n_samples]``."""
    return min(max(0, frame * hop_length - n_fft // 2), n_samples)


@njit(cache=True, error_model="numpy")
def _abs_max_bits(x):
    """Bits of ``max |x|`` as an int32, larger than any finite value's when x holds a NaN or inf.

    For IEEE floats, ``|x|`` orders like its bits read as integers (NaN's above inf's), and an
    integer maximum vectorises where a float one that must propagate NaN does not. Reading the
    samples here also brings them into cache ahead of the framing.
    """
    bits = x.view(np.int32)
    peak = 0
    for i in range(bits.shape[0]):
        peak = max(peak, bits[i] & 0x7FFFFFFF)
    return peak


@njit(cache=True, error_model="numpy")
def _frame(signal, start, window, reflect, frame):
    """``frame = window * padded[start:start + n_fft]`` for the signal padded past its ends with
    zeros (`_window_frame`) or, with ``reflect``, by reflection (`_window_reflected`, sample by
    sample, for the few frames that leave the signal; the others are the same in both modes)."""
    if reflect and (start < 0 or start + window.shape[0] > signal.shape[0]):
        _window_reflected(signal, start, window, frame)
    else:
        _window_frame(signal, start, window, frame)


@njit(cache=True, error_model="numpy")
def _window_reflected(signal, start, window, frame):
    """``frame = window * padded[start:start + n_fft]``, ``padded`` the signal reflected about its
    first and last samples as often as needed: ``np.pad(signal, pad, mode="reflect")``.

    Repeated reflection makes ``padded`` periodic, with period ``2 (n - 1)`` for n samples (a
    1-sample signal repeats its sample), so each index folds back into the signal directly.
    """
    period = max(1, 2 * (signal.shape[0] - 1))
    for k in range(window.shape[0]):
        i = (start + k) % period  # Python's modulo: in [0, period) for negative indices too
        frame[k] = signal[min(i, period - i)] * window[k]


@njit(cache=True, error_model="numpy")
def _window_frame(signal, start, window, frame):
    """``frame = window * signal[start:start + n_fft]``, zero where the range leaves the signal.

    ``start`` may be negative or run past the end: that is the centring's zero padding.
    """
    n_fft = window.shape[0]
    lo = min(max(0, -start), n_fft)
    hi = max(lo, min(n_fft, signal.shape[0] - start))
    frame[:lo] = 0.0
    frame[hi:] = 0.0
    # Slices with loops from 0 let LLVM vectorise (no negative-index wraparound checks).
    src = signal[start + lo:start + hi]
    win = window[lo:hi]
    dst = frame[lo:hi]
    for k in range(hi - lo):
        dst[k] = src[k] * win[k]


@njit(cache=True, error_model="numpy")
def _power(spectrum, power):
    """``power = |spectrum|^2``, element by element, for (n_bins, n_frames) arrays."""
    for k in range(spectrum.shape[0]):
        z, p = spectrum[k], power[k]
        for j in range(z.shape[0]):
            p[j] = z[j].real * z[j].real + z[j].imag * z[j].imag


@njit(cache=True, error_model="numpy")
def _mel_bands(power, band_start, band_offset, band_weights, mel):
    """``mel[m, j] = sum_k weights[m, k] * power[k, j]`` over the bins band m covers.

    Each sum runs over the bins in increasing order, one frame per SIMD lane (frames are
    contiguous in ``power``): 0.24 ms per 30-s clip, half the time of eight scalar sums over
    frame-major power. Bands are too narrow (1 to ~80 bins) to vectorise along bins.

    Parameters
    ----------
    power : np.ndarray
        (n_bins, n_frames) float32.
    band_start, band_offset, band_weights : np.ndarray
        Sparse filterbank from `_sparse_bands`.
    mel : np.ndarray
        (n_mels, n_frames) float32 output.
    """
    for m in range(band_start.shape[0]):
        acc = mel[m]
        acc[:] = 0.0
        rows = power[band_start[m]:]
        w = band_weights[band_offset[m]:band_offset[m + 1]]
        for i in range(w.shape[0]):
            p = rows[i]
            # A loop bound known only at run time: with the constant block size LLVM unrolls the
            # loop instead and leaves it scalar (measured 2.7x slower).
            for j in range(acc.shape[0]):
                acc[j] += w[i] * p[j]


@njit(cache=True, error_model="numpy")
def _store(mel, count, out):
    """``out[:, :count] = mel[:, :count]``; an explicit loop is 3.5x faster than numba's slice
    assignment for these 32-value rows (0.04 against 0.15 ms per 30-s clip)."""
    for m in range(mel.shape[0]):
        src, dst = mel[m], out[m]
        for j in range(count):
            dst[j] = src[j]


@njit(cache=True, error_model="numpy")
def _power_to_db(x, amin, ref_db, mantissa, exponent):
    """In place: ``x = 10 log10(max(amin, x)) - ref_db``, vectorisable, error below 1e-5 dB.

    Parameters
    ----------
    x : np.ndarray
        (n,) float32 powers; ``amin`` must be a normal float32 so every value is normal.
    amin : np.float32
        Smallest power.
    ref_db : float
        dB subtracted from every value.
    mantissa : np.ndarray
        (n,) float32 scratch.
    exponent : np.ndarray
        (n,) int32 scratch.
    """
    # numba calls libm's scalar log10f element by element; splitting the float into exponent and
    # mantissa by its bits and using a short series lets LLVM vectorise the whole loop (5x faster).
    for i in range(x.shape[0]):
        x[i] = max(x[i], amin)
    bits = x.view(np.int32)
    mantissa_bits = mantissa.view(np.int32)
    for i in range(x.shape[0]):
        exponent[i] = (bits[i] >> 23) - 127
        mantissa_bits[i] = (bits[i] & 0x7FFFFF) | 0x3F800000  # same mantissa, exponent 0: [1, 2)
    for i in range(x.shape[0]):
        m = np.float64(mantissa[i])
        e = np.float64(exponent[i])
        # Centre the mantissa on 1 ([sqrt(1/2), sqrt(2))) so the series below converges fast.
        if m > 1.4142135623730951:
            m *= 0.5
            e += 1.0
        # ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1), |s| <= 0.172; the
        # first omitted term is below 1e-9.
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        ln_m = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0
                                                                          + s2 * (1.0 / 9.0)))))
        x[i] = np.float32(_DB_PER_NEPER * (e * _LN2 + ln_m) - ref_db)
