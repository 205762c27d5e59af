"""Blur + downsampling, augmentation and the smooth-patch test of the training data.

``blur_down_np`` is the degradation of the reference data pipeline: pad the
image by k//2 replicating its border pixels, *correlate* (no kernel flip,
like a convolution layer) each channel with the kernel, and keep the pixels
[::scale, ::scale], i.e. starting at (0, 0). The reference runs this with
float32 weights; the sums here are taken in float64 with the kernel first
rounded to float32, then stored as float32.
"""
import numpy as np

__all__ = ['blur_down_np', 'blur_down_uint8', 'draw_augment', 'apply_augment', 'augment',
           'edge_score', 'SMOOTH_THRESHOLD', 'MAX_CROP_TRIES']

# A crop whose centre frame has a mean Sobel magnitude below this is redrawn,
# at most MAX_CROP_TRIES crops in all (the last one is kept whatever it is).
SMOOTH_THRESHOLD = 7.0
MAX_CROP_TRIES = 5


def _spatial_axes(ndim):
    if ndim == 2:
        return 0, 1
    if ndim >= 3:
        return ndim - 3, ndim - 2
    raise ValueError(f'expected HxW, HxWxC or [..., H, W, C] arrays, got {ndim} dimension(s)')


def blur_down_np(img, kernel, scale=4):
    """Blur with ``kernel`` (replicate padding, correlation) and keep every ``scale``-th pixel.

    ``img``: HxW, HxWxC or [..., H, W, C] (channels last), any real dtype.
    ``kernel``: odd-sized 2-D array. Returns float32 of spatial size
    ``ceil(H/scale) x ceil(W/scale)``; ``scale=1`` gives the blurred image.

    Only the kept pixels are computed: the padded image is split into its
    scale x scale polyphase components, so every kernel tap is one
    multiply-add over a contiguous block. Taps are summed in float64 in a
    fixed order (row-major over the kernel), so results are deterministic.
    """
    x = np.asarray(img)
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f'kernel must be 2-D with odd sides, got shape {k.shape}')
    if int(scale) != scale or scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale}')
    s = int(scale)
    if x.ndim < 2:
        raise ValueError(f'expected HxW, HxWxC or [..., H, W, C] arrays, got shape {x.shape}')
    if x.ndim == 2:
        planes = x[None]
    else:
        planes = np.moveaxis(x, -1, -3)        # [..., C, H, W]
    lead = planes.shape[:-2]
    h, w = planes.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f'empty image of shape {x.shape}')
    planes = planes.reshape((-1, h, w))
    weights = k.astype(np.float32).astype(np.float64)
    kh, kw = weights.shape
    py, px = kh // 2, kw // 2
    xp = np.pad(planes, ((0, 0), (py, py), (px, px)), mode='edge')
    oh, ow = -(-h // s), -(-w // s)
    phases = {}
    acc = np.zeros((planes.shape[0], oh, ow))
    tmp = np.empty_like(acc)
    first = True
    for i in range(kh):
        for j in range(kw):
            wij = weights[i, j]
            if wij == 0.0:
                continue
            key = (i % s, j % s)
            if key not in phases:
                phases[key] = np.ascontiguousarray(xp[:, key[0]::s, key[1]::s], dtype=np.float64)
            r, c = i // s, j // s
            src = phases[key][:, r:r + oh, c:c + ow]
            if first:
                np.multiply(src, wij, out=acc)
                first = False
            else:
                np.multiply(src, wij, out=tmp)
                acc += tmp
    out = acc.astype(np.float32).reshape(lead + (oh, ow))
    if x.ndim == 2:
        return out[0]
    return np.ascontiguousarray(np.moveaxis(out, -3, -1))


def blur_down_uint8(img, kernel, scale=4):
    """``blur_down_np`` then clamp to [0, 255] and round half to even, as uint8.

    This is how the reference writes its blurred-down test sets.
    """
    y = blur_down_np(img, kernel, scale)
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


# ------------------------------------------------------------------ augmentation

def draw_augment(rng):
    """(hflip, vflip, rot90) flags, each true with probability 1/2, drawn in that order."""
    return bool(rng.random() < 0.5), bool(rng.random() < 0.5), bool(rng.random() < 0.5)


def apply_augment(x, flags):
    """Apply flags from :func:`draw_augment` to HxW[xC] or [..., H, W, C] arrays.

    Horizontal flip, then vertical flip, then a 90 degree counter-clockwise
    rotation (``np.rot90`` over the spatial axes). Returns a contiguous copy.
    """
    hflip, vflip, rot = flags
    x = np.asarray(x)
    ay, ax = _spatial_axes(x.ndim)
    if hflip:
        x = np.flip(x, axis=ax)
    if vflip:
        x = np.flip(x, axis=ay)
    if rot:
        x = np.rot90(x, axes=(ay, ax))
    return np.ascontiguousarray(x)


def augment(frames, rng):
    """Draw one set of flags and apply it to every frame (or to a [T, H, W, C] stack).

    A list (or tuple) of frames gives a list back; an array gives an array.
    """
    flags = draw_augment(rng)
    if isinstance(frames, (list, tuple)):
        return [apply_augment(f, flags) for f in frames]
    return apply_augment(frames, flags)


# ------------------------------------------------------------------ smooth patches

def edge_score(img):
    """Mean gradient magnitude used to reject flat crops (the reference's Sobel rule).

    Per channel: 3x3 Sobel x and y derivatives with reflect-101 borders,
    absolute values capped at 255, averaged as round-half-even((|gx| + |gy|) / 2)
    capped at 255; the score is the mean over all pixels and channels. This
    is OpenCV's Sobel -> convertScaleAbs -> addWeighted(0.5, 0.5) chain for
    8-bit values.
    """
    x = np.asarray(img)
    if x.ndim == 2:
        x = x[:, :, None]
    # 8-bit input: every intermediate is a small integer, exact in float32 (and faster)
    x = x.astype(np.float32 if x.dtype.kind in 'uib' and x.dtype.itemsize == 1 else np.float64)
    h, w = x.shape[:2]
    if h < 2 or w < 2:
        # reflect-101 needs two pixels; a 1-pixel side has no gradient there
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode='edge')
    else:
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode='reflect')
    smooth_rows = p[:-2] + 2 * p[1:-1] + p[2:]            # [1, 2, 1] down the rows
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    smooth_cols = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]   # [1, 2, 1] along the row
    gy = smooth_cols[2:] - smooth_cols[:-2]
    ax_ = np.minimum(np.abs(np.rint(gx)), 255)
    ay_ = np.minimum(np.abs(np.rint(gy)), 255)
    mag = np.minimum(np.rint(ax_ * 0.5 + ay_ * 0.5), 255)
    # integer-valued: the float64 sum is exact, as numpy's mean of the uint8 result
    return float(mag.sum(dtype=np.float64) / mag.size)
