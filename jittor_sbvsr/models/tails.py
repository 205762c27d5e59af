"""The three implementations of PWC_Recons' tail (upsampling + output convs), inference only.

- :class:`PlainTail`: the layers, run by Jittor (the training model's own
  ``PWC_Recons.tail``).
- :class:`FusedTail`: the same layers as one fused oneDNN op on the CPU
  (ops/fused_conv.py: PixelShuffle inside, one reorder in and out).
- :class:`ComposedTail`: conv, PixelShuffle(2), ..., conv, conv has no
  nonlinearity, so the whole tail is one affine map. Away from the frame's
  edge it equals a (2m+1)^2 convolution from the n_feat LR channels onto
  3 x s x s sub-pixel channels, then PixelShuffle(s): at the published
  configuration a 5x5 128 -> 48 conv, 18 GFLOP per 180x320 frame instead of
  618, and no 128-channel HR tensor. The composed weights are computed in
  float64 from the layers' own, so the result differs from layer by layer
  only by float32 rounding (of one long sum instead of four chained ones).
  The layers zero-pad every intermediate tensor at the frame's edge, which
  the composed map does not see; the outputs of the outermost LR pixels
  (e rows/columns along each edge, e = 1 at the published configuration)
  are therefore taken from a layered tail (plain or fused) run on thin
  strips of the input.

Each takes the weights as they are when it is built (a snapshot); the
inference engine (models/deploy.py) picks one and checks it.
"""
import numpy as np
import jittor as jt
from jittor import nn

from ..ops import fused_conv
from .fused_weights import same_conv, tail_fits, tail_weights


def tail_layers(net):
    """(upsampling convs, output convs) of a PWC_Recons (no upsampling with ``HR_in``)."""
    up = [] if net.HR_in else [m for m in net.upsample_layers if isinstance(m, nn.Conv2d)]
    return up, list(net.out_conv)


class PlainTail:
    """The network's own layers, run by Jittor."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net.tail(x)


class FusedTail:
    """The layers as one fused oneDNN op (CPU); ``layout`` as ops/fused_conv.py takes it."""

    def __init__(self, up_convs, out_convs, layout='auto'):
        self.weights = [jt.array(a) for a in tail_weights(up_convs, out_convs)]
        self.layout = layout

    @classmethod
    def fits(cls, up_convs, out_convs):
        return tail_fits(up_convs, out_convs)

    def __call__(self, x):
        return fused_conv.upsample_tail(x, self.weights, self.layout)


def _conv64(x, w, b=None, mode='constant'):
    """Stride-1 'same' cross-correlation in float64; ``mode`` pads ('constant' = zeros, 'wrap')."""
    k = w.shape[-1]
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode=mode).transpose(1, 0, 2, 3)
    taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # BLAS wants contiguous [O, C] matrices
    y = sum(taps[i, j] @ xp[:, :, i:i + h, j:j + wd].reshape(c, -1) for i in range(k) for j in range(k))
    y = y.reshape(-1, n, h, wd).transpose(1, 0, 2, 3)
    return y if b is None else y + b[None, :, None, None]


def _shuffle64(x, f=2):
    n, c, h, w = x.shape
    return x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (f * f), h * f, w * f)


class ComposedTail:
    """``out_convs(upsample(x))`` for the layers given, with their weights as they are now.

    ``up_convs``: the C -> 4C convs, each followed by PixelShuffle(2);
    ``out_convs``: the convs after them. All stride 1, 'same' zero padding,
    one odd kernel size. ``layered`` runs the layers (a PlainTail or
    FusedTail): on the edge strips, and on inputs too small to split.
    """

    def __init__(self, up_convs, out_convs, layered):
        self.layered = layered
        up_convs = list(up_convs)
        convs = up_convs + list(out_convs)
        k = convs[0].weight.shape[2]
        if k % 2 == 0 or not all(same_conv(c, k) for c in convs):
            raise ValueError('ComposedTail takes stride-1, same-padded convs with biases and one odd kernel size')
        self.n_up, self.n_convs, self.r = len(up_convs), len(convs), k // 2
        self.s = 2 ** self.n_up
        ws = [c.weight.numpy().astype(np.float64) for c in convs]
        bs = [c.bias.numpy().astype(np.float64) for c in convs]
        self.m = max(max(-lo, hi) for a in range(self.s) for lo, hi, _ in [self._needs(a)[-1]])
        w, b = self._compose(ws, bs)
        self.weight, self.bias = jt.array(w.astype(np.float32)), jt.array(b.astype(np.float32))
        self.e = [self._edge(side) for side in (0, 1)]            # LR rows taken from the layers
        self.t = [self._strip(side, self.e[side]) for side in (0, 1)]  # LR rows of the strip that gives them
        self._fit = {}  # side length -> fits()

    # -- composition --------------------------------------------------------
    def _layers(self, x, ws, bs, mode):
        for w, b in zip(ws[:self.n_up], bs[:self.n_up]):
            x = _shuffle64(_conv64(x, w, b, mode))
        for w, b in zip(ws[self.n_up:], bs[self.n_up:]):
            x = _conv64(x, w, b, mode)
        return x

    def _compose(self, ws, bs):
        c, r, s, m = ws[0].shape[1], self.r, self.s, self.m
        # weights: the responses to one unit impulse per input channel on an
        # unbounded zero plane (each layer's input padded by r so that no
        # zero padding ever cuts a response); origin tracks position 0
        x, origin = np.eye(c).reshape(c, c, 1, 1), 0
        for i, w in enumerate(ws):
            x = _conv64(np.pad(x, ((0, 0), (0, 0), (r, r), (r, r))), w)
            origin += r
            if i < self.n_up:
                x, origin = _shuffle64(x), 2 * origin
        # tap k of output phase a reads the response at position s*(m-k)+a; zero
        # padding covers the taps beyond the response's support
        pos = origin + s * (m - np.arange(2 * m + 1))[None, :] + np.arange(s)[:, None]  # [a, k]
        lo, hi = max(0, -pos.min()), max(0, pos.max() + 1 - x.shape[2])
        x = np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)))
        pos = pos + lo
        co = x.shape[1]
        wc = x[:, :, pos[:, :, None, None], pos[None, None]].transpose(1, 2, 4, 0, 3, 5)  # [co, a, b, c, k, l]
        # biases: the response to zero input; periodic with period s, so a
        # 1x1 input with wrap padding is the unbounded plane
        bias = self._layers(np.zeros((1, c, 1, 1)), ws, bs, 'wrap')[0]  # [co, s, s]
        return wc.reshape(co * s * s, c, 2 * m + 1, 2 * m + 1), bias.reshape(co * s * s)

    # -- which outputs the composition gets right ----------------------------
    def _needs(self, p):
        """Input intervals of the convs, last conv's first, for output position p (the last is the input's)."""
        r, lo, hi, out = self.r, p, p, []
        for i in range(self.n_convs - 1, -1, -1):
            lo, hi = lo - r, hi + r
            out.append((lo, hi, self.s if i >= self.n_up else 2 ** i))  # (.., scale of that tensor)
            if 0 < i <= self.n_up:  # conv i reads PixelShuffle's output
                lo, hi = lo // 2, hi // 2
        return out

    def _exact(self, y, n, side=None):
        """Whether LR row y of n rows comes out exact: from the composition (intermediates inside the
        frame), or from the layers run on a strip of n rows at the frame's start (side 0) or end (side 1),
        whose far edge is not the frame's."""
        for a in range(self.s):
            needs = self._needs(self.s * y + a)
            for lo, hi, f in (needs[:-1] if side is None else needs):
                if (side != 1 and hi >= n * f) or (side != 0 and lo < 0):
                    return False
        return True

    def _edge(self, side):
        n = 4 * self.m + 8
        rows = list(range(n)) if side == 0 else list(range(n - 1, -1, -1))
        return next(e for e, y in enumerate(rows) if self._exact(y, n))

    def _strip(self, side, e):
        """Fewest LR rows along an edge on which the layers give its e outermost rows exactly."""
        return next(t for t in range(e, 4 * self.m + 8)
                    if all(self._exact(y, t, side) for y in (range(e) if side == 0 else range(t - e, t))))

    def fits(self, n):
        """Whether a side of n LR pixels splits into edge strips and a composed interior."""
        if n not in self._fit:
            e0, e1 = self.e
            self._fit[n] = n >= max(self.t) and n > e0 + e1 and all(self._exact(y, n) for y in range(e0, n - e1))
        return self._fit[n]

    # -- running -------------------------------------------------------------
    def __call__(self, x):
        """The tail on x [N,C,h,w]."""
        layered = self.layered
        h, w = x.shape[2:]
        if not (self.fits(h) and self.fits(w)):
            return layered(x)
        s, (e0, e1), (t0, t1) = self.s, self.e, self.t
        y = nn.conv2d(x, self.weight, self.bias, 1, self.m)
        if s > 1:
            y = nn.PixelShuffle(s)(y)
        rows = slice(s * e0, s * (h - e1))
        mid = [layered(x[:, :, :, :t0])[:, :, rows, :s * e0], y[:, :, rows, s * e0:s * (w - e1)],
               layered(x[:, :, :, w - t1:])[:, :, rows, s * (t1 - e1):]]
        return jt.concat([layered(x[:, :, :t0])[:, :, :s * e0], jt.concat(mid, 3),
                          layered(x[:, :, h - t1:])[:, :, s * (t1 - e1):]], 2)
