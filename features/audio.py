"""Audio decoding: any file libsndfile reads -> mono float32 at 22050 Hz, fixed length.

GTZAN clips are 16-bit PCM mono at 22050 Hz and run from 661408 to 669680 frames, so the
default ``load`` zero-pads the few short ones and truncates the rest to exactly 30 s
(661500 samples). The raw-waveform model uses the first 25 s (``RAW_SAMPLES``).

Decoding is content-sniffed by libsndfile, not chosen by the extension: a WAV file named
``.mp3`` (or an Ogg Vorbis file named ``.wav``) decodes as what it really is. A file
whose content libsndfile cannot identify fails with an ``AudioError`` whatever its name.

Problems are reported as ``AudioError`` (a ``ValueError``) whose message is one line,
``<path>: <problem>``: missing file, directory, empty file, unrecognised format, a
WAV/AU header that promises more data than the file holds (a truncated copy), zero
frames, a sample rate outside ``MIN_RATE``..``MAX_RATE`` (1 kHz to 768 kHz: anything else is a
damaged header, and resampling it would need a filter of billions of taps), undecodable data
(e.g. a cut FLAC stream), NaN/inf samples. An all-zero clip is
valid audio and only triggers an ``AudioWarning``; so does an MP3 that decodes to fewer
frames than its header estimates (MP3 lengths are estimates, so this may be VBR rather
than a cut file; the frames present are used).

Decoding never trusts a header's counts for memory: it reads blocks of at most ``2 * STREAM_BLOCK``
samples, so a damaged header claiming billions of frames or channels costs no more than the data
that is really there.
"""
import math
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from .files import FileProblem

# Version of the values load and load_pcm16 return: bump it with any change that alters them (never for a
# speed-only rewrite). The cache's fingerprints include it, so caches rebuild exactly when it moves.
VERSION = 1

SR = 22050
DURATION = 30.0
N_SAMPLES = 661_500  # DURATION * SR
RAW_SAMPLES = 551_250  # the first 25 s, the input of the raw-waveform 1-D CNN
STREAM_BLOCK = 1 << 18  # frames `stream` decodes at a time: ~6 s at 44.1 kHz, 2 MiB of stereo float32
MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: the sample rates decoded (real audio spans 8 kHz .. 384 kHz)

# libsndfile logs a header length it could not honour as "data : 44100 (should be 22028)"
# (WAV) or "Data Size : 44100 (should be 22038)" (AU). 0xFFFFFFFF is the "unknown length"
# placeholder streaming writers use, not a truncation.
_TRUNCATED = re.compile(r"(?:^data|Data Size)\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZE = 0xFFFFFFFF


class AudioError(FileProblem, ValueError):
    """A file that cannot be used as audio; ``str()`` is one line naming the file."""


class AudioWarning(UserWarning):
    """Usable audio with something worth knowing (e.g. all samples zero)."""


class AudioInfo(NamedTuple):
    """Header facts of an audio file; ``frames`` is what libsndfile reports (an estimate for MP3)."""

    samplerate: int
    channels: int
    frames: int
    format: str  # libsndfile major format, e.g. 'WAV', 'AU', 'FLAC', 'MP3'
    subtype: str  # e.g. 'PCM_16', 'FLOAT', 'VORBIS'


def _open(path):
    """Open ``path`` with libsndfile, turning every failure into a one-line AudioError."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        # bytes: soundfile encodes a str path strictly, which fails on a name that is not UTF-8
        f = sf.SoundFile(os.fsencode(path))
    except sf.LibsndfileError as e:
        problem = e.error_string.rstrip(".")
        # A non-MP3 named .mp3 is tried as MP3 (by extension) and then misreported as
        # "File does not exist or is not a regular file"; the file was checked above.
        if "not recognised" in problem or "not a regular file" in problem:
            raise AudioError(path, "not a recognised audio format") from None
        raise AudioError(path, f"cannot open as audio ({problem})") from None
    except (OSError, RuntimeError) as e:
        raise AudioError(path, f"cannot open ({e})") from None
    problem = _header_problem(f)
    if problem:
        f.close()
        raise AudioError(path, problem)
    return f


def _header_problem(f):
    """Why the header of an open file cannot be decoded (truncated copy, no frames, odd rate), or None."""
    m = _TRUNCATED.search(f.extra_info)
    if m and int(m[1]) != _STREAMING_SIZE and int(m[1]) > int(m[2]):
        return f"truncated: header declares {m[1]} data bytes, file holds {m[2]}"
    if f.frames == 0:
        return "contains no audio frames"
    if not MIN_RATE <= f.samplerate <= MAX_RATE:
        return f"sample rate {f.samplerate} Hz outside {MIN_RATE}..{MAX_RATE} Hz (a damaged header?)"
    return None


def info(path):
    """Read the header of an audio file without decoding it.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    AudioInfo
        ``(samplerate, channels, frames, format, subtype)``. The cache stores int16
        waveforms when every file reports ``(22050, 1, *, *, 'PCM_16')``.

    Raises
    ------
    AudioError
    """
    with _open(path) as f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)


def _read(f, path, dtype, frames):
    """The next ``frames`` frames (all when -1) of an open file as (n, channels); n < frames at the end."""
    try:
        return f.read(frames=frames, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        problem = str(e).removeprefix("Error : ").rstrip(".")
        raise AudioError(path, f"cannot decode ({problem})") from None


def _blocks(f, path, dtype, frames=-1, block=STREAM_BLOCK):
    """Up to ``frames`` frames (all when -1) of an open file as (n, channels) blocks.

    A block is ``block`` frames of mono or stereo, fewer frames of more channels (at most ``2 * block``
    samples): soundfile allocates what a read asks for (capped only by the header's frame count), so
    bounded reads keep a header claiming 2^40 frames, or 1024 channels, from allocating more than the
    data present.
    """
    per_read = max(1, 2 * block // max(2, f.channels))
    left = math.inf if frames < 0 else frames
    while left > 0 and len(y := _read(f, path, dtype, int(min(per_read, left)))):
        left -= len(y)
        yield y


def _decode(f, path, dtype, frames):
    """Decode up to ``frames`` frames (all when -1) of an open file as (n, channels)."""
    parts = list(_blocks(f, path, dtype, frames))
    if not parts:
        raise AudioError(path, "contains no audio frames")
    y = parts[0] if len(parts) == 1 else np.concatenate(parts)
    # MP3 frame counts are estimates (exact only with a Xing/LAME header), so a shortfall
    # may be a cut-off file or just VBR: decode what is there and say so.
    wanted = f.frames if frames < 0 else min(frames, f.frames)
    if len(y) < wanted:
        warnings.warn(f"{path}: decoded {len(y)} of {f.frames} frames the header announces",
                      AudioWarning, stacklevel=3)
    return y


def _fit(y, n):
    """Zero-pad or truncate a 1-D array to ``n`` samples (``n=None`` keeps it as is)."""
    if n is None or len(y) == n:
        return y
    if len(y) > n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y), y.dtype)])


def _mono(y):
    """(n, channels) -> (n,) float32: the channel mean."""
    return y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)


def _check_values(path, y):
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise AudioError(path, f"{int((~np.isfinite(y)).sum())} NaN/inf samples")
    if not y.any():
        warnings.warn(f"{path}: all samples are zero (silent clip)", AudioWarning, stacklevel=3)


def load(path, sr=SR, duration=DURATION):
    """Decode an audio file to a mono float32 waveform of fixed length.

    Multichannel audio is downmixed by the channel mean; other sample rates are
    resampled to ``sr`` with a polyphase filter (``scipy.signal.resample_poly``).

    Parameters
    ----------
    path : str or Path
        Any format libsndfile reads (WAV 8/16/24/32-bit int or float, AU, AIFF, FLAC,
        Ogg Vorbis, MP3, ...), identified by content, not by extension.
    sr : int
        Output sample rate in Hz.
    duration : float or None
        Output length in seconds: the clip is truncated or zero-padded to exactly
        ``round(duration * sr)`` samples. ``None`` keeps the full length.

    Returns
    -------
    y : np.ndarray, float32, shape (round(duration * sr),)
        Samples in [-1, 1) for integer PCM sources (int16 ``k`` -> ``k / 32768``);
        ``(661500,)`` with the defaults.

    Raises
    ------
    AudioError
        One line naming the file: unreadable, truncated, empty, or NaN/inf samples.

    Warns
    -----
    AudioWarning
        All samples are zero, or an MP3 decodes to fewer frames than announced.
    """
    n_out = None if duration is None else round(duration * sr)
    with _open(path) as f:
        sr_file = f.samplerate
        frames = -1
        if n_out is not None:
            frames = math.ceil(duration * sr_file)
            if sr_file != sr:
                # Read 0.1 s past the cut so the resampling filter's edge effect lands in
                # samples that are thrown away.
                frames += sr_file // 10
        y = _decode(f, path, np.float32, frames)
    y = _mono(y)
    _check_values(path, y)
    if sr_file != sr:
        from scipy.signal import resample_poly  # here: it takes ~0.5 s to import; most files need none

        g = math.gcd(sr, sr_file)
        y = resample_poly(y, sr // g, sr_file // g).astype(np.float32, copy=False)
    return np.ascontiguousarray(_fit(y, n_out))


def load_pcm16(path, n_samples=N_SAMPLES):
    """Read a 16-bit PCM mono 22050 Hz file as its exact int16 samples.

    The lossless fast path of the waveform cache: ``load_pcm16(p) / 32768`` equals
    ``load(p)`` sample for sample.

    Parameters
    ----------
    path : str or Path
    n_samples : int or None
        Truncate or zero-pad to this many samples; ``None`` keeps the full length.

    Returns
    -------
    y : np.ndarray, int16, shape (n_samples,)

    Raises
    ------
    AudioError
        Unreadable, or not 16-bit PCM mono at 22050 Hz (use ``load`` for those).
    """
    with _open(path) as f:
        if (f.samplerate, f.channels, f.subtype) != (SR, 1, "PCM_16"):
            raise AudioError(path, f"not 16-bit PCM mono at {SR} Hz "
                                   f"({f.subtype}, {f.channels} ch, {f.samplerate} Hz)")
        y = _decode(f, path, np.int16, -1 if n_samples is None else n_samples)
    y = y[:, 0]
    _check_values(path, y)
    return np.ascontiguousarray(_fit(y, n_samples))


def stream(path, sr=SR, block=STREAM_BLOCK):
    """Decode a file of any length block by block, as mono float32 chunks at ``sr``.

    The chunks, concatenated, equal ``load(path, sr, duration=None)``: at the file's own rate they are
    its samples; resampled, each block is filtered with enough of its neighbours' samples on both
    sides (``_resampled``) that its output does not depend on where the blocks were cut. Memory stays
    at a few blocks whatever the file's length (a 2-hour song is never decoded whole).

    Parameters
    ----------
    path : str or Path
        Any format ``load`` reads.
    sr : int
        Output sample rate in Hz.
    block : int
        Frames decoded per read (fewer for more than two channels, as ``_blocks`` says).

    Yields
    ------
    np.ndarray, float32, shape (n,)
        Consecutive samples; lengths vary (about ``block * sr / file rate``).

    Raises
    ------
    AudioError
        As ``load`` (the open checks at the first chunk, a decode error or NaN when its block is read).

    Warns
    -----
    AudioWarning
        As ``load``: all samples zero, or fewer frames than the header announces.
    """
    with _open(path) as f:
        chunks = _chunks(f, path, block)
        if f.samplerate != sr:
            chunks = _resampled(chunks, sr, f.samplerate)
        yield from chunks


def _chunks(f, path, block):
    """Mono float32 blocks of an open file, checked as ``load`` checks the whole."""
    decoded, nonzero = 0, False
    for y in _blocks(f, path, np.float32, block=block):
        y = _mono(y)
        if not np.isfinite(y).all():
            raise AudioError(path, f"{int((~np.isfinite(y)).sum())} NaN/inf samples in frames "
                                   f"{decoded}..{decoded + len(y) - 1}")
        decoded, nonzero = decoded + len(y), nonzero or bool(y.any())
        yield y
    if decoded == 0:
        raise AudioError(path, "contains no audio frames")
    if decoded < f.frames:
        warnings.warn(f"{path}: decoded {decoded} of {f.frames} frames the header announces",
                      AudioWarning, stacklevel=3)
    if not nonzero:
        warnings.warn(f"{path}: all samples are zero (silent clip)", AudioWarning, stacklevel=3)


def _resampled(chunks, sr, sr_file):
    """``resample_poly`` of a stream of chunks, equal to resampling their concatenation.

    Each output sample of ``resample_poly(x, up, down)`` is a dot product of its FIR filter with the
    input samples within ``10 max(up, down) / up`` of it (the filter's half length, in input samples).
    So a piece of input cut at multiples of ``down`` (where input and output samples line up) and
    padded with ``context`` samples of the neighbouring input on both sides gives exactly the output
    samples of its own span; only the file's true ends see the zero padding, as in the whole.
    """
    from scipy.signal import resample_poly  # imported when needed, as in load

    g = math.gcd(sr, sr_file)
    up, down = sr // g, sr_file // g
    context = down * math.ceil((10 * max(up, down) / up + 2) / down)
    pending, left = np.zeros(0, np.float32), 0  # pending[:left]: context whose output was yielded
    for y in chunks:
        pending = np.concatenate([pending, y])
        n = (len(pending) - left - context) // down * down  # new samples with their right context read
        if n > 0:
            out = resample_poly(pending[:left + n + context], up, down)
            yield out[left * up // down:(left + n) * up // down].astype(np.float32, copy=False)
            pending, left = pending[left + n - context:], context
    if len(pending) > left:
        yield resample_poly(pending, up, down)[left * up // down:].astype(np.float32, copy=False)
