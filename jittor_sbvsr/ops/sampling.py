"""Resampling with PyTorch's exact index semantics.

Jittor's own ``interpolate``, ``grid_sample`` and ``AdaptiveAvgPool2d`` pick
different source pixels or windows than the PyTorch code the checkpoints were
trained with (docs/porting.md, traps 1, 4 and 6), so the model uses these instead.
All are plain Jittor expressions: autograd comes for free.
"""
import math

import jittor as jt
import numpy as np


def _linear_taps(n_in, n_out):
    """Source indices and weights of align_corners=False linear resizing."""
    f = np.float32
    src = f(n_in / n_out) * (np.arange(n_out, dtype=f) + f(0.5)) - f(0.5)
    src = np.maximum(src, f(0))
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = (src - i0).astype(np.float32)
    l0 = (np.float32(1) - l1).astype(np.float32)
    return i0, i1, l0, l1


def resize_bilinear(x, size):
    """Bilinear resize of [B,C,H,W] to ``size``, align_corners=False (torch semantics)."""
    b, c, h, w = x.shape
    oh, ow = size
    if (oh, ow) == (h, w):
        return x
    y0, y1, wy0, wy1 = _linear_taps(h, oh)
    x0, x1, wx0, wx1 = _linear_taps(w, ow)
    shape = [b, c, oh, ow]

    def tap(yi, xi):
        return x.reindex(shape, ['i0', 'i1', '@e0(i2)', '@e1(i3)'], extras=[jt.array(yi), jt.array(xi)])

    wy0, wy1 = jt.array(wy0).reshape(1, 1, oh, 1), jt.array(wy1).reshape(1, 1, oh, 1)
    wx0, wx1 = jt.array(wx0).reshape(1, 1, 1, ow), jt.array(wx1).reshape(1, 1, 1, ow)
    top = wx0 * tap(y0, x0) + wx1 * tap(y0, x1)
    bot = wx0 * tap(y1, x0) + wx1 * tap(y1, x1)
    return wy0 * top + wy1 * bot


def grid_sample(x, grid, padding_mode='zeros'):
    """Bilinear grid_sample with align_corners=True (PyTorch 0.4.1 behaviour).

    ``grid`` is [B,Ho,Wo,2] in [-1, 1], x first. Outside samples read 0
    ('zeros') or the coordinates are clamped to the image ('border').
    """
    b, c, h, w = x.shape
    _, oh, ow, _ = grid.shape
    # (g + 1) * ((size - 1) / 2): the rounding of PyTorch's vectorised CPU kernel
    ix = (grid[..., 0] + 1) * ((w - 1) / 2)
    iy = (grid[..., 1] + 1) * ((h - 1) / 2)
    if padding_mode == 'border':
        ix = ix.clamp(0, w - 1)
        iy = iy.clamp(0, h - 1)
    elif padding_mode != 'zeros':
        raise ValueError(f'unsupported padding_mode {padding_mode}')
    x0 = ix.floor()
    y0 = iy.floor()
    wx1 = ix - x0
    wy1 = iy - y0
    wx0 = 1 - wx1
    wy0 = 1 - wy1
    x0 = x0.stop_grad().int32()
    y0 = y0.stop_grad().int32()
    x1 = x0 + 1
    y1 = y0 + 1
    shape = [b, c, oh, ow]

    def tap(yi, xi):
        return x.reindex(shape, ['i0', 'i1', '@e0(i0,i2,i3)', '@e1(i0,i2,i3)'],
                         overflow_value=0.0, extras=[yi, xi])

    def u(v):
        return v.unsqueeze(1)

    return (u(wy0 * wx0) * tap(y0, x0) + u(wy0 * wx1) * tap(y0, x1)
            + u(wy1 * wx0) * tap(y1, x0) + u(wy1 * wx1) * tap(y1, x1))


def _pool_matrix(n_in, n_out):
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        m[i, (i * n_in) // n_out: math.ceil((i + 1) * n_in / n_out)] = 1
    return m


def adaptive_avg_pool2d(x, size):
    """AdaptiveAvgPool2d with PyTorch's windows [floor(i*H/n), ceil((i+1)*H/n)).

    Sums the window, then divides by its area, as PyTorch does.
    """
    b, c, h, w = x.shape
    py, px = _pool_matrix(h, size), _pool_matrix(w, size)
    area = np.outer(py.sum(1), px.sum(1)).astype(np.float32)
    s = jt.matmul(jt.matmul(jt.array(py), x), jt.array(px.T))
    return s / jt.array(area)


def replicate_pad(x, p):
    """Edge-replicating pad of the last two dims by p on every side."""
    b, c, h, w = x.shape
    return x.reindex([b, c, h + 2 * p, w + 2 * p], [
        'i0', 'i1',
        f'i2<{p} ? 0 : i2>{h + p - 1} ? {h - 1} : i2-{p}',
        f'i3<{p} ? 0 : i3>{w + p - 1} ? {w - 1} : i3-{p}'])
