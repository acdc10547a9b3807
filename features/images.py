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
"""

import numpy as np
from PIL import Image

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
    x = (S_db - (S_db.max() - np.float32(top_db))) / np.float32(top_db)
    # floor(256 x) clipped is exactly matplotlib's lookup (values under the range take entry 0)
    index = np.clip(np.floor(x * np.float32(256.0)), 0, 255).astype(np.uint8)
    return _LUT[index[::-1]]


def image_views(S_db: np.ndarray, views=DEFAULT_VIEWS, top_db: float = 80.0) -> dict:
    """All requested image views of one clip's dB mel spectrogram.

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
    base = Image.fromarray(colorize(S_db, top_db)).resize(BASE_SIZE, Image.BILINEAR)
    return {name: np.asarray(base.resize(VIEWS[name], Image.BILINEAR)) for name in views}
