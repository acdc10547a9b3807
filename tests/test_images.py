import concurrent.futures

import matplotlib
import numpy as np
import pytest
from PIL import Image

from features import mel
from features.images import BASE_SIZE, VIEWS, _resize_views, colorize, image_views


def test_colorize_is_matplotlib_magma_flipped():
    rng = np.random.default_rng(0)
    S = (rng.standard_normal((128, 300)) * 30).astype(np.float32)
    lo = S.max() - 80.0
    x = (S - np.float32(lo)) / np.float32(80.0)
    want = matplotlib.colormaps["magma"](x, bytes=True)[::-1, :, :3]
    got = colorize(S)
    assert got.dtype == np.uint8 and got.shape == (128, 300, 3)
    np.testing.assert_array_equal(got, want)


def test_colorize_range_ends():
    S = np.full((4, 5), -100.0, np.float32)
    S[0, 0] = 0.0  # the maximum: top of the colormap; everything 80 dB below or more: bottom
    lut = matplotlib.colormaps["magma"](np.arange(256), bytes=True)[:, :3]
    img = colorize(S)
    np.testing.assert_array_equal(img[-1, 0], lut[255])  # band 0 is drawn in the last row
    np.testing.assert_array_equal(img[0, 1], lut[0])


def test_colorize_equals_numpy_formula_on_extremes():
    # the numba pass against the numpy expression it replaces, on values that round or clip
    rng = np.random.default_rng(4)
    S = (rng.standard_normal((64, 333)) * 60).astype(np.float32)
    S[0, :6] = [np.inf, -np.inf, -1e30, 1e-30, -80.0, S.max()]
    lo = np.float32(S.max() - np.float32(80.0))
    S[1, :3] = np.nextafter(lo, np.float32(-np.inf)), lo, np.nextafter(lo, np.float32(np.inf))
    lut = matplotlib.colormaps["magma"](np.arange(256), bytes=True)[:, :3]
    for top_db in (80.0, 30.0, 0.5):
        finite = np.where(np.isinf(S), 0.0, S).astype(np.float32)
        for T in (finite, S):
            with np.errstate(invalid="ignore", over="ignore"):
                x = (T - (T.max() - np.float32(top_db))) / np.float32(top_db)
                index = np.clip(np.floor(x * np.float32(256.0)), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(colorize(T, top_db), lut[index[::-1]])


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_view_shapes(view):
    S = np.zeros((128, 1292), np.float32)
    out = image_views(S, views=(view,))
    w, h = VIEWS[view]
    assert out[view].shape == (h, w, 3) and out[view].dtype == np.uint8


def test_views_keep_orientation():
    # energy in the low bands during the first half only: bright bottom-left, dark elsewhere
    S = np.full((128, 1292), -80.0, np.float32)
    S[:32, :646] = 0.0
    img = image_views(S)["400"].astype(int).sum(axis=2)
    h, w = img.shape
    bottom_left = img[int(h * 0.85):, : int(w * 0.4)].mean()
    top_left = img[: int(h * 0.5), : int(w * 0.4)].mean()
    bottom_right = img[int(h * 0.85):, int(w * 0.6):].mean()
    assert bottom_left > 3 * top_left and bottom_left > 3 * bottom_right


# --- the numba resize against Pillow, bit for bit ---------------------------------------------------

def _pillow_views(rgb, sizes):
    """The reference: Pillow 13's two BILINEAR resizes, as the images module first did them."""
    base = Image.fromarray(rgb).resize(BASE_SIZE, Image.BILINEAR)
    return [np.asarray(base.resize(size, Image.BILINEAR)) for size in sizes]


def _assert_views_match_pillow(S, top_db=80.0):
    got = image_views(S, views=tuple(VIEWS), top_db=top_db)
    want = _pillow_views(colorize(S, top_db), [VIEWS[v] for v in VIEWS])
    for view, w in zip(VIEWS, want):
        np.testing.assert_array_equal(got[view], w, err_msg=f"view {view}")


@pytest.mark.parametrize("shape", [(128, 1292), (128, 431), (96, 2160), (720, 2160), (13, 7)])
def test_views_equal_pillow_random(shape):
    # (96, 2160): Pillow skips the first horizontal pass; (720, 2160): the first resize is a copy
    rng = np.random.default_rng(sum(shape))
    _assert_views_match_pillow((rng.standard_normal(shape) * 25 - 40).astype(np.float32))


def test_views_equal_pillow_on_mel_of_noise():
    rng = np.random.default_rng(1)
    sr = 22050
    t = np.arange(5 * sr) / sr
    y = (0.1 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    S = mel.mel_db(y)
    assert S.shape[0] == 128
    _assert_views_match_pillow(S)
    _assert_views_match_pillow(S, top_db=30.0)


def test_views_equal_pillow_constant_and_extremes():
    _assert_views_match_pillow(np.zeros((128, 1292), np.float32))  # all the top colour
    S = np.full((128, 1292), -1e30, np.float32)  # one bright pixel, the rest far under the range
    S[64, 640] = 1e30
    _assert_views_match_pillow(S)


@pytest.mark.parametrize("fill", ["noise", "white", "checkerboard", "stripes"])
def test_resize_equals_pillow_on_any_rgb(fill):
    # magma never reaches 0 or 255 in every channel; these do, where rounding must clip at 255
    rng = np.random.default_rng(2)
    shape = (128, 1292, 3)
    rgb = {"noise": lambda: rng.integers(0, 256, shape),
           "white": lambda: np.full(shape, 255),
           "checkerboard": lambda: 255 * ((np.indices(shape[:2]).sum(axis=0) % 2)[..., None]
                                          .repeat(3, axis=2)),
           "stripes": lambda: 255 * (np.arange(shape[1]) % 3 == 0)[None, :, None] * np.ones(shape)}
    rgb = rgb[fill]().astype(np.uint8)
    sizes = tuple(VIEWS.values())
    for got, want in zip(_resize_views(rgb, sizes), _pillow_views(rgb, sizes)):
        np.testing.assert_array_equal(got, want)


def test_views_same_from_two_threads():
    rng = np.random.default_rng(3)
    S = [(rng.standard_normal((128, 300)) * 25).astype(np.float32) for _ in range(8)]
    alone = [image_views(s) for s in S]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(image_views, S))
    for a, b in zip(alone, together):
        for view in a:
            np.testing.assert_array_equal(a[view], b[view])
