"""Colour-image views of a dB mel spectrogram, as the report fed its image models.

The report saved each clip's spectrogram as a 2160x720 colour image and rescaled it for every model.
It does not say how the image was drawn; the choices fixed here are:

- colour: the clip's dB mel on [max - top_db, max] mapped linearly onto matplotlib's ``magma``
  colormap, with matplotlib's own rounding (``Colormap(x, bytes=True)``: 256 entries, index
  ``floor(256 x)`` clipped to 0..255);
- orientation: low frequencies at the bottom (row 0 of the array is the highest mel band), time
  left to right;
- size: the (n_mels, n_frames) colour image is upsampled to 2160x720 (width x height, bilinear), then
  Pillow-resized with ``Image.BILINEAR`` (which low-pass filters when shrinking) to each view.

Views are named by their Pillow size (width x height) and stored as uint8 arrays (height, width, 3).

The two resizes are Pillow 13's ``Image.resize(size, Image.BILINEAR)`` reimplemented in numba, bit for
bit (tests/test_images.py compares them with Pillow): the same taps in the same 22-bit fixed point, a
horizontal then a vertical pass per resize, each rounded to uint8. What differs is the order of work:
each band of 48 base rows is shrunk horizontally for all views as soon as it is made, so the 4.7 MB
base image is never stored whole; horizontal passes run on transposed bands, where the sums vectorise;
and the code runs without the GIL, so the cache builder's threads overlap.
"""

import functools

import numpy as np
from numba import njit

# Version of the values image_views returns: bump it with any change that alters them (never for a
# speed-only rewrite). The cache's fingerprints include it, so caches rebuild exactly when it moves.
VERSION = 1

BASE_SIZE = (2160, 720)  # (width, height) of the report's saved figures
VIEWS = {"400": (400, 400), "360x120": (360, 120), "120": (120, 120)}  # name -> (width, height)
DEFAULT_VIEWS = ("400", "360x120")  # the views the report's models read; "120" feeds none


def _magma_lut() -> np.ndarray:
    """(256, 3) uint8 RGB entries of matplotlib's ``magma``, as ``Colormap(..., bytes=True)`` gives."""
    import matplotlib  # imported here: only cache building needs it, and it is slow to import

    return np.ascontiguousarray(matplotlib.colormaps["magma"](np.arange(256), bytes=True)[:, :3])


_LUT = None


def colorize(S_db: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """Map one clip's dB mel spectrogram onto the magma colormap.

    Parameters
    ----------
    S_db : np.ndarray, shape (n_mels, n_frames)
        dB mel spectrogram of one clip.
    top_db : float
        Dynamic range in dB shown: [max - top_db, max] spans the whole colormap.

    Returns
    -------
    np.ndarray, uint8, shape (n_mels, n_frames, 3)
        RGB image, lowest mel band in the last row.
    """
    global _LUT
    if _LUT is None:
        _LUT = _magma_lut()
    S_db = np.asarray(S_db, dtype=np.float32)
    rgb = np.empty(S_db.shape + (3,), np.uint8)
    _colorize(S_db, S_db.max() - np.float32(top_db), np.float32(top_db), _LUT, rgb)
    return rgb


@njit(cache=True, nogil=True)
def _colorize(S_db, lo, top_db, lut, rgb):
    """``rgb = lut[floor(256 (S_db - lo) / top_db) clipped to 0..255]``, rows flipped.

    The same float32 operations in the same order as numpy's
    ``np.clip(np.floor((S_db - lo) / top_db * 256), 0, 255).astype(np.uint8)`` (NaN -> entry 0, as
    numpy's cast gives on x86), fused into one pass: 0.2 against 1.4 ms for a 128 x 1292 clip.
    """
    n_rows = S_db.shape[0]
    for r in range(n_rows):
        src, dst = S_db[r], rgb[n_rows - 1 - r]
        for j in range(src.shape[0]):
            v = np.floor((src[j] - lo) / top_db * np.float32(256.0))
            index = 255 if v >= 255 else (np.int64(v) if v >= 0 else 0)
            dst[j, 0], dst[j, 1], dst[j, 2] = lut[index, 0], lut[index, 1], lut[index, 2]


def image_views(S_db: np.ndarray, views=DEFAULT_VIEWS, top_db: float = 80.0) -> dict:
    """All requested image views of one clip's dB mel spectrogram.

    Equal to ``Image.fromarray(colorize(S_db, top_db)).resize(BASE_SIZE, Image.BILINEAR)`` followed by
    ``.resize(VIEWS[name], Image.BILINEAR)`` for each view. Releases the GIL while resizing, so it can
    run on several threads at once.

    Parameters
    ----------
    S_db : np.ndarray, shape (n_mels, n_frames)
        dB mel spectrogram of one clip.
    views : iterable of str
        Names from ``VIEWS`` (``"400"``, ``"360x120"``, ``"120"``).
    top_db : float
        Dynamic range in dB mapped onto the colormap.

    Returns
    -------
    dict of str -> np.ndarray, uint8, shape (height, width, 3)
    """
    names = tuple(dict.fromkeys(views))
    if not names:
        return {}
    outs = _resize_views(colorize(S_db, top_db), tuple(VIEWS[name] for name in names))
    return dict(zip(names, outs))


def _resize_views(rgb: np.ndarray, sizes: tuple) -> list:
    """``Image.fromarray(rgb).resize(BASE_SIZE, BILINEAR).resize(size, BILINEAR)`` for each size.

    Parameters
    ----------
    rgb : np.ndarray, uint8, shape (h, w, 3)
    sizes : tuple of (width, height)

    Returns
    -------
    list of np.ndarray, uint8, shape (height, width, 3)
    """
    in_h, in_w = rgb.shape[:2]
    base_w, base_h = BASE_SIZE
    widths = tuple(w for w, _ in sizes)
    offsets, h2 = _side_by_side(base_w, widths)
    outs = _resize_twice(np.ascontiguousarray(rgb).reshape(in_h, in_w * 3),
                         _bilinear_taps(in_w, base_w), _bilinear_taps(in_h, base_h), h2,
                         tuple(_bilinear_taps(base_h, h) for _, h in sizes),
                         offsets, np.array(widths, np.int64))
    return [out.reshape(h, w, 3) for (w, h), out in zip(sizes, outs)]


# Pillow's 8-bit fixed point (libImaging/Resample.c): weights carry 32 - 8 - 2 = 22 fraction bits,
# leaving 8 bits for the pixel value and 2 for overshoot, so every sum fits in an int32.
_PRECISION_BITS = 22


@functools.lru_cache(maxsize=None)
def _bilinear_taps(in_size: int, out_size: int):
    """Pillow's ``Image.BILINEAR`` taps for resampling one axis from ``in_size`` to ``out_size`` pixels.

    A line-for-line port of ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` (Pillow 13), in
    Python floats (C doubles) and in the same order of operations, so the rounded integer weights
    are Pillow's bit for bit. Cached: the cache builder needs the same few size pairs for every clip.

    Returns
    -------
    first : np.ndarray, int64, shape (out_size,)
        First input pixel read by each output pixel.
    count : np.ndarray, int64, shape (out_size,)
        Number of input pixels read by each output pixel.
    weights : np.ndarray, int32, shape (out_size, max(count))
        Fixed-point weights (value ``w * 2**22``), zero past ``count``.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # shrinking widens the triangle: a low-pass filter
    support = 1.0 * filterscale
    ss = 1.0 / filterscale
    first = np.empty(out_size, np.int64)
    count = np.empty(out_size, np.int64)
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = []
        ww = 0.0
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * ss)
            w.append(1.0 - t if t < 1.0 else 0.0)
            ww += w[-1]  # summed left to right, as Pillow does (Python's sum() may compensate)
        if ww != 0.0:
            w = [v / ww for v in w]
        # bilinear weights are never negative, so Pillow's rounding is int(0.5 + w * 2**22)
        rows.append([int(0.5 + v * (1 << _PRECISION_BITS)) for v in w])
        first[xx], count[xx] = xmin, xmax
    weights = np.zeros((out_size, max(count)), np.int32)
    for xx, row in enumerate(rows):
        weights[xx, :len(row)] = row
    return first, count, weights


# Base rows resized together (a divisor of BASE_SIZE's height): 48 make the transposed rows 144 values
# long, enough for the sums to vectorise well, and a band's 2160-wide data (0.3 MB) stays in L2 cache.
_BAND = 48


@njit(cache=True, nogil=True)
def _transpose(src, out):
    """out[j, i] = src[i, j] for src (n, m), out (m, n); walks out row by row (faster writes)."""
    for j in range(src.shape[1]):
        for i in range(src.shape[0]):
            out[j, i] = src[i, j]


@njit(cache=True, nogil=True)
def _vertical(src, first, count, weights, out):
    """One vertical pass (Pillow's ``ImagingResampleVertical_8bpc``): src (in_h, n) -> out (out_h, n).

    Rows are n contiguous uint8 values (width * 3 for RGB), so each output row is a weighted sum of
    whole input rows, which vectorises.
    """
    acc = np.empty(src.shape[1], np.int32)
    for yy in range(out.shape[0]):
        acc[:] = np.int32(1 << (_PRECISION_BITS - 1))  # rounds the final shift to nearest
        for t in range(count[yy]):
            w = weights[yy, t]
            y = first[yy] + t
            for i in range(acc.shape[0]):
                acc[i] += np.int32(src[y, i]) * w
        for i in range(acc.shape[0]):
            out[yy, i] = np.uint8(min(max(acc[i] >> _PRECISION_BITS, 0), 255))


@njit(cache=True, nogil=True)
def _horizontal(src, first, count, weights, out):
    """One horizontal pass (Pillow's ``ImagingResampleHorizontal_8bpc``) on RGB rows.

    Done as a vertical pass between two transposes: in the transposed image an input column (its 3
    channels of every row) is one contiguous run, so the weighted sums vectorise; summing pixel
    by pixel along a row, as Pillow does, does not, and runs 3x slower here.

    Parameters
    ----------
    src : np.ndarray, uint8, shape (h, in_w * 3)
    first, count, weights : taps in_w -> out_w (see ``_bilinear_taps``)
    out : np.ndarray, uint8, shape (h, out_w * 3)
    """
    h = src.shape[0]
    in_w, out_w = src.shape[1] // 3, first.shape[0]
    cols = np.empty((in_w * 3, h), np.uint8)
    _transpose(src, cols)
    cols_out = np.empty((out_w * 3, h), np.uint8)
    _vertical(cols.reshape(in_w, 3 * h), first, count, weights, cols_out.reshape(out_w, 3 * h))
    _transpose(cols_out, out)


@njit(cache=True, nogil=True)
def _resize_twice(rgb, h1, v1, h2, v2s, offsets, widths):
    """Pillow's BILINEAR resize to the base size, then each view's resize, fused by bands of rows.

    Each band of ``_BAND`` base rows is finished by the first resize's vertical pass and at once
    shrunk by all views' horizontal passes (their taps side by side in ``h2``), so the 4.7 MB base
    image is never stored whole. The uint8 values are Pillow's: every pass rounds exactly as
    Pillow's does, and the order in which rows are done does not change any of them.

    Parameters
    ----------
    rgb : np.ndarray, uint8, shape (in_h, in_w * 3)
    h1, v1 : tuples (first, count, weights)
        Taps in_w -> base_w and in_h -> base_h (base_h a multiple of ``_BAND``).
    h2 : tuple (first, count, weights)
        Taps base_w -> sum(widths): every view's horizontal taps, concatenated.
    v2s : tuple of tuples (first, count, weights)
        Each view's taps base_h -> its height.
    offsets, widths : np.ndarray, int64, shape (n_views,)
        Where each view's columns lie in the concatenated horizontal pass.

    Returns
    -------
    list of np.ndarray, uint8, shape (height, width * 3)
    """
    in_h = rgb.shape[0]
    base_w, base_h = h1[0].shape[0], v1[0].shape[0]
    narrow = np.empty((in_h, base_w * 3), np.uint8)
    _horizontal(rgb, h1[0], h1[1], h1[2], narrow)  # all rows: upsampling reads every one
    band = np.empty((_BAND, base_w * 3), np.uint8)
    shrunk = np.empty((base_h, h2[0].shape[0] * 3), np.uint8)
    for y0 in range(0, base_h, _BAND):
        rows = slice(y0, y0 + _BAND)
        _vertical(narrow, v1[0][rows], v1[1][rows], v1[2][rows], band)
        _horizontal(band, h2[0], h2[1], h2[2], shrunk[rows])
    outs = []
    for i, v2 in enumerate(v2s):
        out = np.empty((v2[0].shape[0], 3 * widths[i]), np.uint8)
        _vertical(shrunk[:, 3 * offsets[i]:3 * (offsets[i] + widths[i])], v2[0], v2[1], v2[2], out)
        outs.append(out)
    return outs


@functools.lru_cache(maxsize=None)
def _side_by_side(in_size: int, out_sizes: tuple):
    """Horizontal taps of several views in one table, so one pass over a row serves them all.

    Returns
    -------
    offsets : np.ndarray, int64, shape (n_views,)
        Each view's first column in the concatenated output.
    (first, count, weights) : as ``_bilinear_taps``, for sum(out_sizes) outputs.
    """
    taps = [_bilinear_taps(in_size, n) for n in out_sizes]
    weights = np.zeros((sum(out_sizes), max(t[2].shape[1] for t in taps)), np.int32)
    offsets = np.cumsum((0,) + out_sizes[:-1]).astype(np.int64)
    for off, (_, _, w) in zip(offsets, taps):
        weights[off:off + w.shape[0], :w.shape[1]] = w
    return offsets, (np.concatenate([t[0] for t in taps]), np.concatenate([t[1] for t in taps]), weights)
