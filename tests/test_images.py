import matplotlib
import numpy as np
import pytest

from features.images import VIEWS, colorize, image_views


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
