"""PSNR/SSIM must reproduce the reference's per-frame numbers, not just come close."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from jittor_sbvsr.metrics.psnr_ssim import calc_psnr, gaussian_window, psnr, psnr_ssim, shave, ssim


def _load(path):
    return np.asarray(Image.open(path).convert('RGB'))


@pytest.fixture(scope='module')
def reference_metrics(public_case):
    with open(public_case / 'upstream_metrics.json', encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def computed(public_case, reference_metrics):
    out = {}
    for v, frames in reference_metrics['frames'].items():
        for t in frames:
            sr = _load(public_case / 'upstream_sr' / v / f'{t}.png')
            gt = _load(public_case / 'HR' / v / f'{t}.png')
            out[v, t] = psnr_ssim(sr, gt, crop_border=4)
    return out


def test_every_frame_matches_reference(reference_metrics, computed):
    n = 0
    for v, frames in reference_metrics['frames'].items():
        for t, ref in frames.items():
            p, s = computed[v, t]
            assert p == pytest.approx(ref['psnr'], rel=1e-9, abs=0), (v, t)
            assert s == pytest.approx(ref['ssim'], rel=1e-9, abs=0), (v, t)
            n += 1
    assert n == 14


def test_video_and_total_averages(reference_metrics, computed):
    for v, ref in reference_metrics['videos'].items():
        vals = [pv for (vv, _), pv in computed.items() if vv == v]
        assert len(vals) == ref['n_frames']
        assert np.mean([p for p, _ in vals]) == pytest.approx(ref['psnr'], rel=1e-9)
        assert np.mean([s for _, s in vals]) == pytest.approx(ref['ssim'], rel=1e-9)
    total = reference_metrics['total']
    mean_p = np.mean([p for p, _ in computed.values()])
    mean_s = np.mean([s for _, s in computed.values()])
    assert mean_p == pytest.approx(total['psnr'], rel=1e-9)
    assert mean_s == pytest.approx(total['ssim'], rel=1e-9)
    assert round(mean_p, 3) == 20.765
    assert round(mean_s, 5) == 0.45127


def test_identical_images():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (40, 50, 3)).astype(np.uint8)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    p, s = psnr_ssim(img, img.copy())
    assert p == math.inf and s == pytest.approx(1.0, abs=1e-12)


def test_grayscale_and_known_psnr():
    a = np.zeros((32, 32), np.uint8)
    b = np.full((32, 32), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10))
    # no uint8 wrap-around: 0 - 10 must not become 246
    assert psnr(b, a) == psnr(a, b)
    assert 0 < ssim(a, b) < 1


def test_training_psnr_of_float_batches():
    """calc_psnr, the trainer's PSNR on float [0, 1] batches: 100 for identical ones."""
    a = np.zeros((1, 3, 16, 16), np.float32)
    assert calc_psnr(a, a) == 100
    b = a.copy()
    b[:, :, 4:12, 4:12] = 0.1
    assert calc_psnr(a, b) == pytest.approx(20.0, abs=1e-5)


def test_shape_mismatch_raises():
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError):
        psnr(a, a[:, :31])
    with pytest.raises(ValueError):
        ssim(a, a[:31])
    with pytest.raises(ValueError):
        psnr_ssim(a, a[..., :1])


def test_too_small_for_ssim_raises():
    a = np.zeros((10, 30, 3), np.uint8)
    with pytest.raises(ValueError):
        ssim(a, a)
    with pytest.raises(ValueError):
        psnr_ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))


def test_window_is_normalised_gaussian():
    w = gaussian_window()
    assert w.shape == (11, 11)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)
    assert w[5, 5] == w.max()
    g = np.exp(-np.arange(-5, 6) ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    np.testing.assert_allclose(w, np.outer(g, g), rtol=0, atol=1e-17)


def test_crop_border():
    img = np.arange(20 * 30).reshape(20, 30)
    assert shave(img, 4).shape == (12, 22)
    assert shave(img, 4)[0, 0] == img[4, 4]
    assert shave(img, 0) is not None and shave(img, 0).shape == img.shape


def test_crop_changes_result_only_through_border():
    rng = np.random.RandomState(1)
    a = rng.randint(0, 256, (40, 40, 3)).astype(np.uint8)
    b = a.copy()
    b[:4] = 0  # damage confined to the cropped border
    assert psnr_ssim(a, b, crop_border=4)[0] == math.inf
    assert psnr_ssim(a, b, crop_border=0)[0] < 100
