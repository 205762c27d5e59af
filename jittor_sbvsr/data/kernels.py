"""Blur kernels of the Self-Blind-VSR training and test data.

Two families, as in the paper's experiments:

* Gaussian: an isotropic MATLAB ``fspecial('gaussian')`` kernel. Training
  draws sigma uniformly from the 17 values 0.4, 0.5, ..., 2.0; the kernel is
  ``ceil(3 sigma) * 2 + 1`` pixels wide (5 to 13). The Gaussian test sets use
  sigma 1.2 (a 9x9 kernel).
* Realistic: an anisotropic Gaussian on a 31x31 grid (random eigenvalues of
  the covariance in [2.4, 20], i.e. [0.6, 5] times the scale 4, random angle),
  multiplied pixel-wise by (1 + uniform noise in [-0.25, 0.25]), moved so its
  centre of mass sits at (15.5, 15.5) with a cubic-spline shift, clipped at
  0, normalised, resized to 13x13 with OpenCV's INTER_CUBIC rule and clipped
  and normalised again. Because the 31x31 centre of mass is put at 15.5 (half
  a pixel past the middle pixel 15), the 13x13 kernel's centre of mass lies
  about 0.2 px right of and below its middle pixel: that is what the
  reference does and it is kept.

Random draws use a ``numpy.random.Generator`` given by the caller, so the
data loader can make every sample a function of (seed, epoch, index).
All kernels are float64 and sum to 1.
"""
import math

import numpy as np
from scipy import ndimage

# float64 machine epsilon (MATLAB's eps): np.finfo warns about subnormals once Jittor set FTZ
_EPS64 = 2.220446049250313e-16

__all__ = ['GAUSSIAN_SIGMAS', 'TEST_GAUSSIAN_SIGMA', 'gaussian_kernel_size', 'gaussian_kernel', 'test_gaussian_kernel',
           'random_gaussian_kernel', 'realistic_kernel_from_params', 'random_realistic_kernel',
           'bicubic_resize', 'bicubic_upscale', 'pad_kernel', 'kernel_image', 'kernel_image_minmax']

# The training sigmas, written as the decimal literals the reference uses
# (so that ceil(3 * sigma) sees the same float values).
GAUSSIAN_SIGMAS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9,
                   2.0)
TEST_GAUSSIAN_SIGMA = 1.2


def gaussian_kernel_size(sigma):
    """Width of the Gaussian kernel for ``sigma``: ``ceil(3 sigma) * 2 + 1``, in float64 arithmetic.

    Note ``3 * 0.7 = 2.0999999999999996`` and ``3 * 1.1 = 3.3000000000000003``:
    the float products decide, as in the reference.
    """
    return int(math.ceil(float(sigma) * 3) * 2 + 1)


def gaussian_kernel(size, sigma):
    """MATLAB ``fspecial('gaussian', [size size], sigma)`` as float64.

    Values below ``eps * max`` are set to 0, then the kernel is divided by
    its sum. ``size`` may be an int or a (rows, cols) pair.
    """
    rows, cols = (size, size) if np.isscalar(size) else size
    if rows < 1 or cols < 1:
        raise ValueError(f'kernel size must be positive, got {size}')
    if not sigma > 0:
        raise ValueError(f'sigma must be positive, got {sigma}')
    m, n = (rows - 1.0) / 2.0, (cols - 1.0) / 2.0
    y = np.arange(-m, m + 1)[:, None]
    x = np.arange(-n, n + 1)[None, :]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < _EPS64 * h.max()] = 0
    total = h.sum()
    if total != 0:
        h /= total
    return h


def test_gaussian_kernel():
    """The Gaussian of the Gaussian test sets (sigma TEST_GAUSSIAN_SIGMA, its 9x9 size), float64."""
    return gaussian_kernel(gaussian_kernel_size(TEST_GAUSSIAN_SIGMA), TEST_GAUSSIAN_SIGMA)


def random_gaussian_kernel(rng, return_sigma=False):
    """A training Gaussian kernel: sigma drawn uniformly from :data:`GAUSSIAN_SIGMAS`."""
    sigma = GAUSSIAN_SIGMAS[int(rng.integers(len(GAUSSIAN_SIGMAS)))]
    k = gaussian_kernel(gaussian_kernel_size(sigma), sigma)
    return (k, sigma) if return_sigma else k


# ------------------------------------------------------------------ realistic

def realistic_kernel_from_params(lambda_1, lambda_2, theta, noise, ksize=13, scale=4):
    """The realistic kernel for given covariance eigenvalues, angle and noise field.

    ``noise`` is the raw_size x raw_size multiplicative noise (values in
    [-noise_level, noise_level]); its size sets the raw grid (31 in training).
    Deterministic: :func:`random_realistic_kernel` draws the parameters.
    """
    noise = np.asarray(noise, dtype=np.float64)
    raw = noise.shape[0]
    if noise.ndim != 2 or noise.shape[1] != raw:
        raise ValueError(f'noise must be square, got shape {noise.shape}')
    c, s = np.cos(theta), np.sin(theta)
    q = np.array([[c, -s], [s, c]])
    cov = q @ np.diag([lambda_1, lambda_2]) @ q.T
    inv = np.linalg.inv(cov)
    # Mean at raw//2 + (scale - raw % 2) / 2 on both axes: 16.5 for 31 and x4.
    mu = raw // 2 + 0.5 * (scale - raw % 2)
    grid = np.arange(raw, dtype=np.float64)
    zx = (grid - mu)[None, :]   # first coordinate: column index
    zy = (grid - mu)[:, None]   # second coordinate: row index
    # z^T inv z, evaluated as (z^T inv) z
    r0 = zx * inv[0, 0] + zy * inv[1, 0]
    r1 = zx * inv[0, 1] + zy * inv[1, 1]
    quad = r0 * zx + r1 * zy
    k = np.exp(-0.5 * quad) * (1 + noise)
    # Move the centre of mass to (raw/2, raw/2) with a cubic spline shift.
    com = np.array(ndimage.center_of_mass(k))
    k = ndimage.shift(k, np.array(k.shape) / 2 - com)
    k[k < 0] = 0
    k = k / np.sum(k)
    if ksize != raw:
        k = bicubic_resize(k, (ksize, ksize))
    k = np.clip(k, 0, np.max(k))
    return k / np.sum(k)


def random_realistic_kernel(rng, ksize=13, scale=4, raw_size=31, noise_level=0.25):
    """A random anisotropic 'realistic' kernel (see the module docstring).

    Draws, in order: two eigenvalues uniform in [0.6 scale, 5 scale], an
    angle uniform in [0, pi), and a raw_size x raw_size noise field uniform
    in [-noise_level, noise_level].
    """
    min_var, max_var = 0.6 * scale, 5.0 * scale
    lambda_1 = min_var + rng.random() * (max_var - min_var)
    lambda_2 = min_var + rng.random() * (max_var - min_var)
    theta = rng.random() * np.pi
    noise = -noise_level + rng.random((raw_size, raw_size)) * noise_level * 2
    return realistic_kernel_from_params(lambda_1, lambda_2, theta, noise, ksize=ksize, scale=scale)


# ------------------------------------------------------------------ bicubic

def _cubic_taps(n_in, n_out):
    """Source indices [n_out, 4] and float32 weights [n_out, 4] of OpenCV's INTER_CUBIC.

    The source coordinate is computed in double and rounded to float
    ((d + 0.5) * n_in / n_out - 0.5), split into floor and fraction in
    float32, and the Keys weights with a = -0.75 are evaluated in float32,
    the last one as 1 - (the other three). Taps outside the image are clamped
    to the border pixel (replicate).
    """
    scale = 1.0 / (n_out / n_in)  # OpenCV inverts the output/input ratio
    a = np.float32(-0.75)
    one = np.float32(1.0)
    idx = np.empty((n_out, 4), np.int64)
    w = np.empty((n_out, 4), np.float32)
    for d in range(n_out):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = int(math.floor(f))
        x = np.float32(f - np.float32(s))
        x1 = np.float32(x + one)
        c0 = ((a * x1 - np.float32(5) * a) * x1 + np.float32(8) * a) * x1 - np.float32(4) * a
        c1 = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + one
        y = np.float32(one - x)
        c2 = ((a + np.float32(2)) * y - (a + np.float32(3))) * y * y + one
        c3 = one - c0 - c1 - c2
        w[d] = (c0, c1, c2, c3)
        idx[d] = np.clip(np.arange(s - 1, s + 3), 0, n_in - 1)
    return idx, w


def bicubic_resize(img, out_hw):
    """Resize like ``cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)``.

    ``img`` is HxW or HxWxC; ``out_hw`` is (rows, cols). Rows are resampled
    first along x, then along y, each output a 4-tap sum in float64 with
    float32 weights, in OpenCV's order, so the result equals OpenCV's for
    float64 input (no antialiasing when shrinking, replicated borders).
    Returns float64.
    """
    src = np.asarray(img, dtype=np.float64)
    if src.ndim not in (2, 3):
        raise ValueError(f'expected HxW or HxWxC, got shape {src.shape}')
    h, w = src.shape[:2]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if oh < 1 or ow < 1 or h < 1 or w < 1:
        raise ValueError(f'cannot resize {h}x{w} to {oh}x{ow}')
    if (oh, ow) == (h, w):
        return src.copy()
    xi, xw = _cubic_taps(w, ow)
    yi, yw = _cubic_taps(h, oh)
    return _separable(src, (yi, yw.astype(np.float64)), (xi, xw.astype(np.float64)))


def _separable(src, rows, cols):
    """``src`` resampled along x by the taps ``cols`` ((indices, weights), each [n_out, 4]),
    then along y by ``rows``, each output a 4-tap float64 sum from left to right."""
    (yi, yw), (xi, xw) = rows, cols
    extra = (None,) * (src.ndim - 2)
    tmp = src[:, xi[:, 0]] * xw[(None, slice(None), 0) + extra]
    for j in range(1, 4):
        tmp = tmp + src[:, xi[:, j]] * xw[(None, slice(None), j) + extra]
    out = tmp[yi[:, 0]] * yw[(slice(None), 0, None) + extra]
    for j in range(1, 4):
        out = out + tmp[yi[:, j]] * yw[(slice(None), j, None) + extra]
    return out


def _matlab_taps(n_in, scale):
    """Indices [n_out, 4] and float64 weights of MATLAB's ``imresize(..., scale, 'bicubic')`` when
    enlarging: source coordinate (d + 0.5) / scale - 0.5, Keys' cubic with a = -0.5, weights
    normalised to sum 1, taps outside the image mirrored (symmetric padding)."""
    n_out = n_in * scale
    u = (np.arange(n_out) + 0.5) / scale - 0.5
    idx = np.floor(u).astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    x = np.abs(u[:, None] - idx)
    w = np.where(x <= 1, 1.5 * x ** 3 - 2.5 * x ** 2 + 1,
                 np.where(x < 2, -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2, 0.0))
    w = w / w.sum(axis=1, keepdims=True)
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    return np.clip(idx, 0, n_in - 1), w


def bicubic_upscale(img, scale):
    """The paper's bicubic baseline: MATLAB ``imresize(img, scale, 'bicubic')`` of a uint8
    HxW or HxWxC image (an integer ``scale`` >= 1), rounded to uint8 as MATLAB returns it."""
    src = np.asarray(img)
    if src.dtype != np.uint8 or src.ndim not in (2, 3):
        raise ValueError(f'expected a uint8 HxW or HxWxC image, got {src.dtype} {src.shape}')
    scale = int(scale)
    if scale < 1:
        raise ValueError(f'scale must be >= 1, got {scale}')
    out = _separable(src.astype(np.float64), _matlab_taps(src.shape[0], scale), _matlab_taps(src.shape[1], scale))
    return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)  # MATLAB rounds halves up


# ------------------------------------------------------------------ helpers

def pad_kernel(kernel, size):
    """Zero-pad an odd kernel symmetrically to ``size`` x ``size`` (same blur, same centre)."""
    k = np.asarray(kernel)
    kh, kw = k.shape
    if kh % 2 == 0 or kw % 2 == 0 or size % 2 == 0:
        raise ValueError(f'kernel and target sizes must be odd, got {k.shape} -> {size}')
    if kh > size or kw > size:
        raise ValueError(f'kernel {kh}x{kw} is larger than {size}x{size}')
    out = np.zeros((size, size), k.dtype)
    t, l = (size - kh) // 2, (size - kw) // 2
    out[t:t + kh, l:l + kw] = k
    return out


def kernel_image(kernel, zoom=16):
    """uint8 grey picture of a kernel: divided by its peak, x255, rounded, enlarged ``zoom`` x (nearest).

    The kernel picture of inference's --save_kernel and the blur-down tool
    (training's result images use :func:`kernel_image_minmax`).
    Degenerate kernels still give a picture: NaN taps count as 0, infinite
    ones as the largest float, and a kernel with no positive tap is black.
    """
    k = np.nan_to_num(np.asarray(kernel, dtype=np.float64))
    peak = k.max()
    img = k / peak if peak > 0 else np.zeros_like(k)
    img = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)


def kernel_image_minmax(kernel):
    """uint8 RGB picture of a kernel at its own size, stretched from its min to its max.

    The training-time result images (``--save_images``), where the contrast
    of a nearly flat estimated kernel matters more than its scale. An
    all-equal kernel is black; NaN and infinite taps count as 0.
    """
    k = np.nan_to_num(np.asarray(kernel, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(k.min()), float(k.max())
    k = (k - lo) / (hi - lo) if hi > lo else np.zeros_like(k)
    k = np.clip(np.round(k * 255), 0, 255).astype(np.uint8)
    return np.repeat(k[:, :, None], 3, axis=2)
