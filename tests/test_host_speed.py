"""The fast host-side paths give the numbers and pixels of the plain ones.

SSIM (the C kernel of metrics/native.py and the scipy path) is checked
against the whole-image 2-D Gaussian filtering it replaces (written out
here, independently of the package), PNG output against the pixels it was
given.
"""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import ROOT, posix_only, run_child
from jittor_sbvsr.metrics import native
from jittor_sbvsr.metrics.psnr_ssim import _gaussian_1d, gaussian_window, psnr, psnr_ssim, shave, ssim
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


@pytest.mark.parametrize('shape', [(11, 11), (11, 12, 3), (40, 57, 3), (33, 80), (64, 48, 1), (100, 75, 3)])
def test_the_c_kernel_gives_scipys_ssim(shape):
    """metrics/native.py against the scipy path (and the 2-D formulation), uint8 frames, bands
    cut anywhere (more rows than one band, and fewer)."""
    assert native.compiler() is not None, 'no C compiler here: the kernel is not tested'
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-30, 31, shape), 0, 255).astype(np.uint8)
        got = ssim(a, b)
        assert native.ssim_map(a if a.ndim == 3 else a[:, :, None], b if b.ndim == 3 else b[:, :, None],
                               _gaussian_1d(), _C1, _C2) is not None  # the kernel ran
        assert abs(got - ssim(a, b, native=False)) < 1e-12
        assert abs(got - _ssim_2d(a, b)) < 1e-12


def test_the_c_kernel_on_a_720p_frame_and_a_non_contiguous_crop():
    sr, gt = _real_looking(728, 1288)
    sr, gt = sr[4:-4, 4:-4], gt[4:-4, 4:-4]  # what psnr_ssim passes: views of the cropped frames
    assert abs(ssim(sr, gt) - ssim(sr, gt, native=False)) < 1e-12
    assert psnr_ssim(sr, gt) == (psnr(shave(sr, 4), shave(gt, 4)), ssim(shave(sr, 4), shave(gt, 4)))


def test_without_a_compiler_scipy_gives_the_same_numbers(monkeypatch):
    sr, gt = _real_looking(60, 90, seed=3)
    with_kernel = ssim(sr, gt)
    monkeypatch.setattr(native, '_lib', [])
    monkeypatch.setattr(native, 'compiler', lambda: None)
    assert native.ssim_map(sr, gt, _gaussian_1d(), _C1, _C2) is None
    assert abs(ssim(sr, gt) - with_kernel) < 1e-12


@posix_only('the SSIM kernel is built only where there is a POSIX C compiler (a .so)')
def test_the_kernel_builds_under_a_home_with_spaces_and_cjk(tmp_path):
    """Built into <Jittor's home>/.cache/jittor-sbvsr/, atomically, by a fresh process."""
    home = tmp_path / '用户 张三'
    code = ('import numpy as np\n'
            'from jittor_sbvsr.metrics import native\n'
            'from jittor_sbvsr.metrics.psnr_ssim import _gaussian_1d, ssim\n'
            'a = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)\n'
            'assert native.ssim_map(a, a[::-1].copy(), _gaussian_1d(), 1.0, 1.0) is not None\n'
            'print(repr(ssim(a, a[::-1])), repr(ssim(a, a[::-1], native=False)))\n')
    r = run_child([sys.executable, '-c', code], capture_output=True, text=True, encoding='utf-8', timeout=300,
                  cwd=str(ROOT), env=dict(os.environ, JITTOR_HOME=str(home), PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    x, y = map(float, r.stdout.split())
    assert abs(x - y) < 1e-12
    built = list((home / '.cache' / 'jittor-sbvsr').iterdir())
    assert len(built) == 1 and built[0].name.startswith('ssim-') and built[0].suffix == '.so'  # no temp left
