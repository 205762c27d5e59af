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


def test_training_psnr_plot_draws_bicubic_as_a_reference_line(tmp_path):
    from jittor_sbvsr.trainer.evaluate import PSNR_NAMES
    from jittor_sbvsr.trainer.experiment import _plot
    from jittor_sbvsr.trainer.losses import LOSS_NAMES
    from jittor_sbvsr import runtime
    # these import Jittor, whose SIGCHLD handler would end pytest itself when a later test kills a child
    runtime.python_sigint()
    history = {'epoch': [1, 2, 3], **{k: [1.0, 0.5, 0.25] for k in LOSS_NAMES},
               **{k: [23.0, 24.0, 26.0] for k in PSNR_NAMES}}
    _plot(str(tmp_path), history, 25.0)
    img = np.asarray(Image.open(tmp_path / 'psnr.png'))
    ys, xs = _pixels(img, ORANGE)
    curve_y, _ = _pixels(img, BLUE)
    # flat, across the plot, between the curve's first (23 dB, low) and last (26 dB, high) points
    assert xs.min() < 90 and xs.max() > 600 and ys.max() - ys.min() <= 2
    assert curve_y.min() < ys.mean() < curve_y.max()
    assert not _pixels(np.asarray(Image.open(tmp_path / 'cycle_psnr.png')), ORANGE)[0].size
