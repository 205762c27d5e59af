"""PWC-Net optical flow (Sun et al. 2018) as Self-Blind-VSR uses it.

Module and attribute names follow the PyTorch PWC-Net port whose weights
(``network-default.pytorch``) the paper loads, so checkpoints convert by
identity. Parity traps (docs/porting.md, traps 1, 2, 3 and 6): align_corners=True
warps with occupancy masks, refiner dilations, the x20 flow scaling and the
64-multiple resize.
"""
import math

import jittor as jt
from jittor import nn

from ..ops.correlation import correlation
from ..ops.sampling import grid_sample, resize_bilinear

# Per decoder level, feature channels entering it: cost volume + first
# features + upsampled flow + upsampled features (level 6 has only the volume).
_CURRENT = {2: 81 + 32 + 2 + 2, 3: 81 + 64 + 2 + 2, 4: 81 + 96 + 2 + 2, 5: 81 + 128 + 2 + 2, 6: 81}
# Flow scale for the warp at each level (the flow is predicted /20 at 1/4 res).
_BACKWARD_SCALE = {2: 5.0, 3: 2.5, 4: 1.25, 5: 0.625}
_DENSE = (128, 128, 96, 64, 32)


def _lrelu():
    return nn.LeakyReLU(scale=0.1)


def _conv(cin, cout, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation)


def backward_warp(x, flow):
    """Warp ``x`` by ``flow`` (pixels) inside PWC-Net.

    Samples a ones channel along with x and zeroes every output pixel whose
    sample was not fully inside the image (mask > 0.999).
    """
    b, _, h, w = flow.shape
    gx = jt.array(_linspace(w)).reshape(1, 1, w).broadcast([b, h, w])
    gy = jt.array(_linspace(h)).reshape(1, h, 1).broadcast([b, h, w])
    grid = jt.stack([gx + flow[:, 0] / ((x.shape[3] - 1.0) / 2.0),
                     gy + flow[:, 1] / ((x.shape[2] - 1.0) / 2.0)], dim=3)
    out = grid_sample(jt.concat([x, jt.ones((b, 1, x.shape[2], x.shape[3]), x.dtype)], 1), grid, 'zeros')
    mask = (out[:, -1:] > 0.999).float32().stop_grad()
    return out[:, :-1] * mask


def _linspace(n):
    """torch.linspace(-1, 1, n) in float32 (symmetric two-sided fill)."""
    import numpy as np
    if n == 1:
        return np.array([-1.0], np.float32)
    step = np.float32(2) / np.float32(n - 1)
    i = np.arange(n)
    half = n // 2
    lo = np.float32(-1) + step * i[:half].astype(np.float32)
    hi = np.float32(1) - step * (n - 1 - i[half:]).astype(np.float32)
    return np.concatenate([lo, hi]).astype(np.float32)


class Extractor(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 16, 32, 64, 96, 128, 196]
        for name, cin, cout in zip(['moduleOne', 'moduleTwo', 'moduleThr', 'moduleFou', 'moduleFiv', 'moduleSix'],
                                   chans[:-1], chans[1:]):
            setattr(self, name, nn.Sequential(_conv(cin, cout, 2), _lrelu(), _conv(cout, cout), _lrelu(),
                                              _conv(cout, cout), _lrelu()))
        self.levels = ['moduleOne', 'moduleTwo', 'moduleThr', 'moduleFou', 'moduleFiv', 'moduleSix']

    def execute(self, x):
        feats = []
        for name in self.levels:
            x = getattr(self, name)(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    LAYERS = ('moduleOne', 'moduleTwo', 'moduleThr', 'moduleFou', 'moduleFiv')  # the dense layers, in order

    def __init__(self, level):
        super().__init__()
        cur = _CURRENT[level]
        if level < 6:
            prev = _CURRENT[level + 1] + sum(_DENSE)
            self.moduleUpflow = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
            self.moduleUpfeat = nn.ConvTranspose2d(prev, 2, 4, stride=2, padding=1)
            self.backward_scale = _BACKWARD_SCALE[level]
        cin = cur
        for name, cout in zip(self.LAYERS, _DENSE):
            setattr(self, name, nn.Sequential(_conv(cin, cout), _lrelu()))
            cin += cout
        self.moduleSix = nn.Sequential(_conv(cin, 2))

    def features(self, first, second, previous):
        """The input of the dense layers: the cost volume (and, below the top level, the first
        frame's features, the upsampled flow and features of the level above)."""
        if previous is None:
            return nn.leaky_relu(correlation(first, second), scale=0.1)
        flow = self.moduleUpflow(previous['flow'])
        upfeat = self.moduleUpfeat(previous['feat'])
        volume = nn.leaky_relu(correlation(first, backward_warp(second, flow * self.backward_scale)), scale=0.1)
        return jt.concat([volume, first, flow, upfeat], 1)

    def dense(self, feat):
        for name in self.LAYERS:
            feat = jt.concat([getattr(self, name)(feat), feat], 1)
        return {'flow': self.moduleSix(feat), 'feat': feat}

    def execute(self, first, second, previous):
        return self.dense(self.features(first, second, previous))


class Refiner(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [_CURRENT[2] + sum(_DENSE), 128, 128, 128, 96, 64, 32]
        dilations = [1, 2, 4, 8, 16, 1]
        layers = []
        for cin, cout, d in zip(chans[:-1], chans[1:], dilations):
            layers += [_conv(cin, cout, dilation=d), _lrelu()]
        layers.append(_conv(32, 2))
        self.moduleMain = nn.Sequential(*layers)

    def execute(self, x):
        return self.moduleMain(x)


class Network(nn.Module):
    """PWC-Net proper: flow at 1/4 resolution, divided by 20."""

    def __init__(self):
        super().__init__()
        self.moduleExtractor = Extractor()
        self.moduleTwo = Decoder(2)
        self.moduleThr = Decoder(3)
        self.moduleFou = Decoder(4)
        self.moduleFiv = Decoder(5)
        self.moduleSix = Decoder(6)
        self.moduleRefiner = Refiner()

    DECODERS = ('moduleSix', 'moduleFiv', 'moduleFou', 'moduleThr', 'moduleTwo')  # coarse to fine

    def execute(self, first, second, fast=None):
        return self.decode(self.moduleExtractor(first), self.moduleExtractor(second), fast)

    def decode(self, f1, f2, fast=None):
        """Flow from the two frames' extractor pyramids (``moduleExtractor`` outputs). ``fast``:
        {decoder name or 'moduleRefiner': a function} run in place of that module's dense layers
        (``Decoder.dense``) or of the refiner (models/deploy.py)."""
        fast = fast or {}
        est = None
        for i, name in zip(range(5, 0, -1), self.DECODERS):
            dec = getattr(self, name)
            feat = dec.features(f1[i], f2[i], est)
            est = fast.get(name, dec.dense)(feat)
        return est['flow'] + fast.get('moduleRefiner', self.moduleRefiner)(est['feat'])


def _size64(h, w):
    return int(math.floor(math.ceil(h / 64.0) * 64.0)), int(math.floor(math.ceil(w / 64.0) * 64.0))


class Flow_PWC(nn.Module):  # noqa: N801 (the reference's name)
    """Flow between two frames at their own size, in pixels (x right, y down).

    ``pretrain_fn``: PWC-Net weights (``network-default`` as .pkl or the
    original .pytorch file); '.' or None for none.
    """

    def __init__(self, pretrain_fn=None):
        super().__init__()
        self.moduleNetwork = Network()
        if pretrain_fn not in (None, '', '.'):
            from ..weights.checkpoint import load_state, load_into_module
            load_into_module(self.moduleNetwork, load_state(pretrain_fn), pretrain_fn)

    def pyramid(self, frame):
        """PWC-Net's feature pyramid of one frame (at the 64-multiple size).

        A frame's pyramid does not depend on the frame it is paired with, so
        a video can compute it once per frame (``estimate_flow(...,
        pyramids=)``) instead of twice per flow: same values, less work.
        """
        return self.moduleNetwork.moduleExtractor(resize_bilinear(frame, _size64(frame.shape[2], frame.shape[3])))

    def estimate_flow(self, first, second, pyramids=None, fast=None):
        """``pyramids``: optional (pyramid(first), pyramid(second)); ``fast``: as Network.decode takes it."""
        h, w = first.shape[2], first.shape[3]
        h64, w64 = _size64(h, w)
        if pyramids is None:
            flow = self.moduleNetwork(resize_bilinear(first, (h64, w64)), resize_bilinear(second, (h64, w64)), fast)
        else:
            flow = self.moduleNetwork.decode(*pyramids, fast)
        flow = 20.0 * resize_bilinear(flow, (h, w))
        return jt.concat([flow[:, :1] * (float(w) / float(w64)), flow[:, 1:] * (float(h) / float(h64))], 1)

    def warp(self, x, flo):
        """Align ``x`` (a neighbour's features) to the centre frame along ``flo``.

        Border padding for the features; pixels whose sample leaves the image
        are zeroed by the mask, which is returned too.
        """
        b, _, h, w = x.shape
        xx = jt.arange(w).float32().reshape(1, 1, w).broadcast([b, h, w])
        yy = jt.arange(h).float32().reshape(1, h, 1).broadcast([b, h, w])
        vx = 2.0 * (xx + flo[:, 0]) / max(w - 1, 1) - 1.0
        vy = 2.0 * (yy + flo[:, 1]) / max(h - 1, 1) - 1.0
        grid = jt.stack([vx, vy], dim=3)
        out = grid_sample(x, grid, 'border')
        # detach(), not stop_grad(): stop_grad() works in place and would cut
        # the flow's gradient through ``out`` as well. The reference samples
        # a ones tensor of x's shape; every channel of it gives the same
        # value, so one channel is sampled and broadcast (same mask).
        mask = grid_sample(jt.ones((b, 1, h, w), x.dtype), grid.detach(), 'zeros')
        mask = (mask >= 0.999).float32().stop_grad().broadcast(x.shape)
        return out * mask, mask

    def execute(self, first, second, pyramids=None, fast=None):
        return self.estimate_flow(first, second, pyramids, fast)

    forward = execute
