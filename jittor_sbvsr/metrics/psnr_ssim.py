"""PSNR and SSIM exactly as the reference inference script computes them.

The reference uses OpenCV; here the same arithmetic is done with numpy and
scipy (SSIM of 8-bit frames with the small C kernel of native.py, where a C
compiler builds it) so that the numbers match without OpenCV at run time.
"""
import math

import numpy as np
from scipy import ndimage

from .native import ssim_map

__all__ = ['psnr', 'ssim', 'psnr_ssim', 'bicubic_psnr_ssim', 'metric_problem', 'gaussian_window', 'shave', 'calc_psnr']

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_VALID = _WIN_SIZE // 2  # rows/cols dropped after filtering: only full windows count
_BAND = 1 << 17  # values per row band of ssim (x5 float64 arrays: a few MB, cache-sized)


def _pair(img1, img2):
    """Two equally shaped HxW or HxWxC images as arrays (ValueError if they are not)."""
    a = np.asarray(img1)
    b = np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f'images differ in shape: {a.shape} vs {b.shape}')
    if a.ndim not in (2, 3):
        raise ValueError(f'expected an HxW or HxWxC image, got shape {a.shape}')
    return a, b


def _as_pair(img1, img2):
    """float64 copies of two equally shaped HxW or HxWxC images."""
    a, b = _pair(img1, img2)
    return a.astype(np.float64), b.astype(np.float64)


def psnr(img1, img2):
    """PSNR in dB for 8-bit images (peak 255); ``inf`` when they are identical."""
    a, b = _as_pair(img1, img2)
    if a.size == 0:
        raise ValueError('images are empty')
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float('inf')
    return 20 * math.log10(255.0 / math.sqrt(mse))


def gaussian_window(size=_WIN_SIZE, sigma=_WIN_SIGMA):
    """2-D window as the outer product of a normalised 1-D Gaussian (MATLAB/OpenCV style)."""
    g = _gaussian_1d(size, sigma)
    return np.outer(g, g)


def _gaussian_1d(size=_WIN_SIZE, sigma=_WIN_SIGMA):
    """The normalised 1-D Gaussian whose outer product is :func:`gaussian_window`."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _ssim_rows(a, b, g, out):
    """SSIM map of the full-window pixels of a band of rows (HxWxC float64 in, cropped map out).

    The window is separable, so the local sums are two 1-D passes over one
    stacked array instead of fifteen 2-D correlations; only full windows are
    kept, so no border rule is involved. E[a^2] and E[b^2] appear only as
    their sum (sigma1^2 + sigma2^2), so a^2 + b^2 is filtered once: four maps
    (mu1, mu2, E[a^2 + b^2], E[ab]), not five. The maps are integers up to
    2 * 255^2, exact in float64: same values as the 2-D filter to float
    rounding (~1e-16).
    """
    st = np.empty((4,) + a.shape)
    st[0], st[1] = a, b
    np.multiply(a, a, out=st[2])
    st[2] += b * b
    np.multiply(a, b, out=st[3])
    f = ndimage.correlate1d(st, g, axis=1)[:, _VALID:-_VALID]
    f = ndimage.correlate1d(f, g, axis=2)[:, :, _VALID:-_VALID]
    mu1, mu2, e_sq, e12 = f
    mu1_mu2 = mu1 * mu2
    mu_sq = mu1 * mu1
    mu_sq += mu2 * mu2  # mu1^2 + mu2^2
    np.divide((2 * mu1_mu2 + _C1) * (2 * (e12 - mu1_mu2) + _C2),
              (mu_sq + _C1) * ((e_sq - mu_sq) + _C2), out=out)


def ssim(img1, img2, native=True):
    """Gaussian-window SSIM over the whole image: one mean over all channels.

    Only complete 11x11 windows count (the reference crops its filter
    outputs by 5 px). 8-bit frames go to the C kernel of native.py (``native``
    False: never); else, or where it cannot be built, scipy's separable
    filters in bands of rows that stay in the CPU cache. Both agree with
    whole-image 2-D filtering to 1e-15.
    """
    a, b = _pair(img1, img2)
    if min(a.shape[0], a.shape[1]) <= 2 * _VALID:
        raise ValueError(f'image {a.shape[0]}x{a.shape[1]} is too small for an '
                         f'{_WIN_SIZE}x{_WIN_SIZE} SSIM window')
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    g = _gaussian_1d()
    if native and a.dtype == np.uint8 and b.dtype == np.uint8:
        out = ssim_map(a, b, g, _C1, _C2)
        if out is not None:
            return float(out.mean())
    a, b = a.astype(np.float64), b.astype(np.float64)
    h, w, c = a.shape
    out = np.empty((h - 2 * _VALID, w - 2 * _VALID, c), np.float64)
    rows = max(8, _BAND // (w * c))
    for y in range(0, h - 2 * _VALID, rows):
        e = min(y + rows, h - 2 * _VALID)
        _ssim_rows(a[y:e + 2 * _VALID], b[y:e + 2 * _VALID], g, out[y:e])
    return float(out.mean())


def shave(img, border):
    """Drop ``border`` pixels from each side (0 keeps the image as is)."""
    img = np.asarray(img)
    if border < 0:
        raise ValueError(f'crop border must be >= 0, got {border}')
    if border == 0:
        return img
    if min(img.shape[0], img.shape[1]) <= 2 * border:
        raise ValueError(f'image {img.shape[0]}x{img.shape[1]} is too small to crop '
                         f'{border} px from each border')
    return img[border:-border, border:-border]


def metric_problem(h, w, crop_border=4):
    """Why :func:`psnr_ssim` cannot score an h x w frame (None if it can), known before any work."""
    if min(h, w) <= 2 * crop_border:
        return f'{h}x{w} frames are too small to crop {crop_border} px from each border'
    if min(h, w) - 2 * crop_border <= 2 * _VALID:
        return (f'{h}x{w} frames are too small for an {_WIN_SIZE}x{_WIN_SIZE} SSIM window after the '
                f'{crop_border}-px border crop (each side needs at least {2 * crop_border + 2 * _VALID + 1} px)')
    return None


def psnr_ssim(sr, gt, crop_border=4):
    """(psnr, ssim) of an SR frame against its ground truth after the 4-px border crop."""
    sr = np.asarray(sr)
    gt = np.asarray(gt)
    if sr.shape != gt.shape:
        raise ValueError(f'images differ in shape: {sr.shape} vs {gt.shape}')
    sr_c = shave(sr, crop_border)
    gt_c = shave(gt, crop_border)
    return psnr(sr_c, gt_c), ssim(sr_c, gt_c)


def bicubic_psnr_ssim(lr, gt, scale, crop_border=4):
    """(psnr, ssim) of the bicubic baseline (data/kernels.py: MATLAB's imresize, as the paper's
    tables use) against ``gt``: the same metric and border crop as the model's frames."""
    from ..data.kernels import bicubic_upscale
    return psnr_ssim(bicubic_upscale(lr, scale), gt, crop_border)


def calc_psnr(img1, img2, shave=4):
    """The reference's training-time PSNR: float images in [0,1] [B,C,H,W], border ``shave``.

    Not :func:`psnr` (uint8 images, inference): no rounding or clamping; mse
    in float32 as numpy computes it; 100 if equal.
    """
    a = np.asarray(img1, np.float32)[:, :, shave:-shave, shave:-shave]
    b = np.asarray(img2, np.float32)[:, :, shave:-shave, shave:-shave]
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return 100.0
    return 20 * math.log10(1.0 / math.sqrt(mse))
