"""PSNR and SSIM exactly as the reference inference script computes them.

The reference uses OpenCV; here the same arithmetic is done with numpy and
scipy so that the numbers match without OpenCV at run time.
"""
import math

import numpy as np
from scipy import ndimage

__all__ = ['psnr', 'ssim', 'psnr_ssim', 'metric_problem', 'gaussian_window', 'shave', 'calc_psnr']

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_VALID = _WIN_SIZE // 2  # rows/cols dropped after filtering: only full windows count


def _as_pair(img1, img2):
    """float64 copies of two equally shaped HxW or HxWxC images."""
    a = np.asarray(img1)
    b = np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f'images differ in shape: {a.shape} vs {b.shape}')
    if a.ndim not in (2, 3):
        raise ValueError(f'expected an HxW or HxWxC image, got shape {a.shape}')
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
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def _filter(img, window):
    """Same-size correlation per channel; 'mirror' is OpenCV's reflect-101 border."""
    if img.ndim == 2:
        return ndimage.correlate(img, window, mode='mirror')
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        out[:, :, c] = ndimage.correlate(img[:, :, c], window, mode='mirror')
    return out


def ssim(img1, img2):
    """Gaussian-window SSIM over the whole image: one mean over all channels.

    Filter outputs are cropped by 5 px, so only complete 11x11 windows count.
    """
    a, b = _as_pair(img1, img2)
    if min(a.shape[0], a.shape[1]) <= 2 * _VALID:
        raise ValueError(f'image {a.shape[0]}x{a.shape[1]} is too small for an '
                         f'{_WIN_SIZE}x{_WIN_SIZE} SSIM window')
    w = gaussian_window()
    v = slice(_VALID, -_VALID)

    def filt(x):
        return _filter(x, w)[v, v]

    mu1 = filt(a)
    mu2 = filt(b)
    mu1_sq = mu1 ** 2
    mu2_sq = mu2 ** 2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = filt(a ** 2) - mu1_sq
    sigma2_sq = filt(b ** 2) - mu2_sq
    sigma12 = filt(a * b) - mu1_mu2
    ssim_map = (((2 * mu1_mu2 + _C1) * (2 * sigma12 + _C2))
                / ((mu1_sq + mu2_sq + _C1) * (sigma1_sq + sigma2_sq + _C2)))
    return float(ssim_map.mean())


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
