"""The training curves (jittor_sbvsr/trainer/plots.py): PNG line plots without matplotlib."""
import numpy as np
from PIL import Image

from jittor_sbvsr.trainer.plots import save_line_plot


def test_line_plot_png_skips_nan_and_draws_flat_curves(tmp_path):
    p = tmp_path / 'curve.png'
    save_line_plot(p, {'a': [3.0, 2.0, float('nan'), 1.0], 'b': [1.0]}, x=[1, 2, 3, 4], title='t')
    img = np.asarray(Image.open(p))
    assert img.shape == (400, 640, 3) and img.min() < 100  # something was drawn
    save_line_plot(p, {'const': [5.0, 5.0]})  # a flat curve must not divide by zero
