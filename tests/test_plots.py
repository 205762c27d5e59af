"""The training curves (jittor_sbvsr/trainer/plots.py): PNG line plots without matplotlib."""
import numpy as np
from PIL import Image

from jittor_sbvsr.trainer.plots import save_line_plot

BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # the first two curves' colours


def _pixels(img, colour, below=70):
    """(rows, cols) of the pixels of ``colour``, under the legend (rows >= ``below``)."""
    ys, xs = np.nonzero((img[below:] == colour).all(axis=2))
    return ys + below, xs


def test_line_plot_png_skips_nan_and_draws_flat_curves(tmp_path):
    p = tmp_path / 'curve.png'
    save_line_plot(p, {'a': [3.0, 2.0, float('nan'), 1.0], 'b': [1.0]}, x=[1, 2, 3, 4], title='t')
    img = np.asarray(Image.open(p))
    assert img.shape == (400, 640, 3)
    # curve a: one falling line across the plot, through the NaN (left out, not a gap or a drop)
    ys, xs = _pixels(img, BLUE)
    assert xs.size and xs.min() < 260 and xs.max() > 600, (xs.min(), xs.max())
    left, mid, right = (ys[(xs > a) & (xs < b)].mean() for a, b in ((240, 270), (420, 450), (590, 620)))
    assert left < mid < right  # the loss falls: lower on the picture
    # curve b: a single point, drawn as a dot at a's last value (the lowest)
    by, bx = _pixels(img, ORANGE)
    assert 0 < by.size < 60 and abs(by.mean() - right) < 15 and bx.max() < 90, (by.size, by.mean(), bx.max())

    save_line_plot(p, {'const': [5.0, 5.0]})  # a flat curve must not divide by zero
    ys, xs = _pixels(np.asarray(Image.open(p)), BLUE)
    assert xs.size and xs.max() - xs.min() > 500 and ys.max() - ys.min() <= 2  # drawn, and flat
