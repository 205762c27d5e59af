"""The fast host-side paths give the numbers and pixels of the plain ones.

SSIM is checked against the whole-image 2-D Gaussian filtering it replaces
(written out here, independently of the package), PNG output against the
pixels it was given.
"""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jittor_sbvsr.metrics.psnr_ssim import gaussian_window, psnr, psnr_ssim, ssim
from jittor_sbvsr.utils.files import save_png_atomic

_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _ssim_2d(a, b):
    """The 2-D formulation: 15 same-size correlations (mirror border), cropped by 5 px."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    w = gaussian_window()

    def filt(x):
        return np.stack([ndimage.correlate(x[:, :, c], w, mode='mirror')
                         for c in range(x.shape[2])], 2)[5:-5, 5:-5]
    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1 ** 2, filt(b * b) - mu2 ** 2, filt(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + _C1) * (2 * s12 + _C2)) / ((mu1 ** 2 + mu2 ** 2 + _C1) * (s1 + s2 + _C2))
    return float(m.mean())


def _real_looking(h, w, seed=0):
    """A smooth photo-like frame and a blurred, noisy copy of it (uint8 HxWx3)."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.uint8)
    gt = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    sr = ndimage.uniform_filter(gt.astype(np.float64), (3, 3, 1)) + rng.normal(0, 4, gt.shape)
    return np.clip(np.rint(sr), 0, 255).astype(np.uint8), gt


@pytest.mark.parametrize('shape', [(11, 11, 3), (12, 40), (37, 53, 3), (101, 7 * 1024 // 3, 3),
                                   (160, 90, 1)])
def test_ssim_matches_2d_filtering_on_random_frames(shape):
    rng = np.random.RandomState(sum(shape))
    a = rng.randint(0, 256, shape).astype(np.uint8)
    b = np.clip(a + rng.randint(-40, 41, shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(_ssim_2d(a, b), abs=1e-12, rel=0)
    c = rng.randint(0, 256, shape).astype(np.uint8)  # unrelated frames: SSIM near 0
    assert ssim(a, c) == pytest.approx(_ssim_2d(a, c), abs=1e-12, rel=0)


def test_ssim_matches_2d_filtering_on_a_720p_frame():
    sr, gt = _real_looking(720, 1280)
    sr, gt = sr[4:-4, 4:-4], gt[4:-4, 4:-4]  # what psnr_ssim scores
    expected = _ssim_2d(sr, gt)
    assert 0.5 < expected < 0.999
    assert ssim(sr, gt) == pytest.approx(expected, abs=1e-12, rel=0)
    mse = np.mean((sr.astype(np.float64) - gt) ** 2)
    assert psnr_ssim(np.pad(sr, ((4, 4), (4, 4), (0, 0))), np.pad(gt, ((4, 4), (4, 4), (0, 0))))[0] \
        == psnr(sr, gt) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-12, rel=0)


@pytest.mark.parametrize('shape', [(37, 53, 3), (30, 20), (9, 13, 4)])
def test_png_round_trips_exactly(tmp_path, shape):
    rng = np.random.RandomState(3)
    img = rng.randint(0, 256, shape).astype(np.uint8)
    p = save_png_atomic(tmp_path / 'f.png', img)
    with Image.open(p) as im:
        assert im.format == 'PNG'
        np.testing.assert_array_equal(np.asarray(im), img)
