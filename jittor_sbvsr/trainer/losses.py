"""Self-supervised training losses of Self-Blind-VSR.

The total loss of one batch (reference weights)::

    L1(recons_down, input_center) + L1(input_cycle, input_center)
      + 0.5 * boundaries(k) + 0.04 * sparsity(k) + 1.0 * centralized(k)

The three kernel priors act on the estimated kernel ``k`` [B,1,ks,ks]:

- boundaries: mean of ``|k * mask|``; ``mask = 30 * (1 - g / max g)`` where
  ``g`` is the outer product of a 1-D Gaussian of length ``ks`` and sigma
  ``ks`` (sampled at -ks//2+1 ... ks//2), with the central block zeroed
  (the central 9x9 for ks=13);
- sparsity: mean over all entries of ``|k|**0.5`` where ``|k| > 0`` (0 elsewhere);
- centralized: per sample, the mean squared distance of the kernel's centre of
  mass (row, column) from (ks//2, ks//2), averaged over the batch.
"""
import numpy as np

import jittor as jt

__all__ = ['LOSS_WEIGHTS', 'LOSS_NAMES', 'penalty_mask', 'l1_loss', 'boundaries_loss',
           'sparsity_loss', 'centralized_loss', 'SelfBlindLoss']

# name -> weight, in the order the terms are added up
LOSS_WEIGHTS = {
    'recons_down_l1': 1.0,
    'cycle_l1': 1.0,
    'kernel_boundaries': 0.5,
    'kernel_sparse': 0.04,
    'kernel_center': 1.0,
}
LOSS_NAMES = tuple(LOSS_WEIGHTS) + ('total',)
_TWO64 = float(2 ** 64)
_TWO_M32 = float(2 ** -32)


def _gaussian_1d(size, sigma):
    z = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    return np.exp(-z ** 2 / (2 * sigma ** 2)) / np.sqrt(2 * np.pi * sigma ** 2)


def penalty_mask(ksize=13, scale=30.0):
    """The boundaries-loss weight map, float32 [ks,ks] (computed in float64 first)."""
    g = _gaussian_1d(ksize, float(ksize))
    g = np.outer(g, g)
    mask = 1 - g / np.max(g)
    centre = ksize // 2 + ksize % 2
    margin = (ksize - centre) // 2 - 1
    # numpy slice semantics as the reference: margin 0 (ksize < 7) zeroes nothing
    mask[margin:-margin, margin:-margin] = 0
    return (scale * mask).astype(np.float32)


def _mean(x):
    """Mean of a float32 Var, accumulated in float64, returned as float32.

    Jittor sums float32 sequentially: over the ~10^4 pixels of an L1 term that
    alone is off by up to ~1e-6 relative, more than PyTorch's (pairwise)
    float32 mean is off from the exact value. Float64 accumulation gives the
    exact mean rounded to float32; the gradient (1/N per element) is unchanged.
    """
    return x.float64().mean().float32()


def l1_loss(a, b):
    return _mean((a - b).abs())


def boundaries_loss(kernel, mask):
    """``mask``: a float32 Var [ks,ks] from :func:`penalty_mask`."""
    ks = kernel.shape[-1]
    return _mean((kernel * mask.reshape(1, 1, ks, ks)).abs())


def sparsity_loss(kernel):
    k = kernel.abs()
    pos = k > 0
    # sqrt only where k > 0, so that no inf/nan gradient appears elsewhere.
    # Jittor compiles with -Ofast, where the sqrt of a denormal can come out
    # NaN: sqrt(k) = sqrt(k * 2^64) * 2^-32 is the same value (exact power-of-
    # two scalings; a kernel entry is at most 1) computed on a normal number.
    safe = jt.where(pos, k, jt.ones_like(k)) * _TWO64
    return _mean(jt.where(pos, jt.sqrt(safe) * _TWO_M32, jt.zeros_like(k)))


def centralized_loss(kernel, indices, centre):
    """``indices``: float32 Var [ks] (0..ks-1); ``centre``: ks//2.

    Computed in float64 (a small difference of nearly equal numbers), returned
    as float32.
    """
    b, _, ks, _ = kernel.shape
    k = kernel.reshape(b, ks, ks).float64()
    indices = indices.float64()
    total = k.sum(dims=(1, 2))
    rows = (k.sum(dim=2) * indices.reshape(1, ks)).sum(dim=1) / total
    cols = (k.sum(dim=1) * indices.reshape(1, ks)).sum(dim=1) / total
    per_sample = ((rows - centre).sqr() + (cols - centre).sqr()) / 2
    return (per_sample.sum() / b).float32()


class SelfBlindLoss:
    """Computes every term; ``__call__(out_dict) -> (total, {name: Var})``."""

    def __init__(self, ksize=13, weights=None):
        self.ksize = ksize
        self.weights = dict(LOSS_WEIGHTS if weights is None else weights)
        self._mask = penalty_mask(ksize)
        self._indices = np.arange(ksize, dtype=np.float32)
        self.centre = float(ksize // 2)

    def terms(self, out):
        kernel = out['est_kernel']
        centre = out['input']
        mask = jt.array(self._mask).stop_grad()
        idx = jt.array(self._indices).stop_grad()
        return {
            'recons_down_l1': l1_loss(out['recons_down'], centre),
            'cycle_l1': l1_loss(out['input_cycle'], centre),
            'kernel_boundaries': boundaries_loss(kernel, mask),
            'kernel_sparse': sparsity_loss(kernel),
            'kernel_center': centralized_loss(kernel, idx, self.centre),
        }

    def __call__(self, out):
        terms = self.terms(out)
        total = None
        for name, w in self.weights.items():
            t = terms[name] if w == 1.0 else terms[name] * w
            total = t if total is None else total + t
        terms['total'] = total
        return total, terms
