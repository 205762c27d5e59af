"""PWC_Recons: the Self-Blind-VSR network (flow-aligned video SR + KernelNet).

Defaults are the published checkpoints' configuration (about 18.9 M
parameters); the reference class's own smaller defaults are only a keyword
away. ``execute`` takes and returns what the reference's ``forward`` does.
"""
import math

import jittor as jt
from jittor import nn

from ..ops.sampling import replicate_pad, resize_bilinear
from .flow_pwc import Flow_PWC
from .kernel_net import KernelNet


class ResBlock(nn.Module):
    def __init__(self, inplanes, planes, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size, stride=stride, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, padding=pad, dilation=dilation)
        self.relu = nn.ReLU()
        self.res_translate = None
        if inplanes != planes or stride != 1:
            self.res_translate = nn.Conv2d(inplanes, planes, 1, stride=stride)

    def execute(self, x):
        res = x if self.res_translate is None else self.res_translate(x)
        return self.conv2(self.relu(self.conv1(x))) + res


def blur_down(x, kernel, scale):
    """Blur each sample with its own kernel, then keep every ``scale``-th pixel.

    x [B,C,H,W], kernel [B,1,k,k]; replicate padding keeps the size. One
    grouped convolution does all samples and channels at once.
    """
    b, c, h, w = x.shape
    k = kernel.shape[-1]
    xp = replicate_pad(x, k // 2).reshape(1, b * c, h + 2 * (k // 2), w + 2 * (k // 2))
    weight = kernel.broadcast([b, c, k, k]).reshape(b * c, 1, k, k)
    blur = nn.conv2d(xp, weight, None, 1, 0, 1, b * c).reshape(b, c, h, w)
    return blur[:, :, ::scale, ::scale]


class PWC_Recons(nn.Module):  # noqa: N801 (the reference's name)
    def __init__(self, n_colors=3, n_sequence=5, extra_RBS=3, recons_RBS=20, n_feat=128, kernel_size=3,
                 scale=4, ksize=13, HR_in=False, flow_pretrain_fn=None):
        super().__init__()
        self.ksize = ksize
        self.n_sequence = n_sequence
        self.scale = scale
        self.HR_in = HR_in
        self.in_conv = nn.Sequential(nn.Conv2d(n_colors, n_feat, 3, padding=1))
        self.extra_feat = nn.Sequential(*[ResBlock(n_feat, n_feat, kernel_size) for _ in range(extra_RBS)])
        self.fusion_conv = nn.Sequential(nn.Conv2d(n_feat * n_sequence, n_feat, 3, padding=1))
        self.recons_net = nn.Sequential(*[ResBlock(n_feat, n_feat, kernel_size) for _ in range(recons_RBS)])
        self.out_conv = nn.Sequential(nn.Conv2d(n_feat, n_feat, 3, padding=1),
                                      nn.Conv2d(n_feat, n_colors, 3, padding=1))
        up = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(n_feat, n_feat * 4, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample_layers = nn.Sequential(*up)
        self.flow_net = Flow_PWC(pretrain_fn=flow_pretrain_fn)
        self.kernel_net = KernelNet(in_c=n_colors * n_sequence, ksize=ksize)

    # -- pieces -----------------------------------------------------------
    def tail(self, feat):
        """``out_conv(upsample_layers(feat))`` (no upsampling with ``HR_in``)."""
        if not self.HR_in:
            feat = self.upsample_layers(feat)
        return self.out_conv(feat)

    def frame_features(self, frame):
        return self.extra_feat(self.in_conv(frame))

    def align(self, feat, flow):
        """A neighbour's features warped to the centre frame along ``flow`` (masked)."""
        return self.flow_net.warp(feat, flow)[0]

    def trunk(self, aligned):
        """``recons_net(fusion_conv(aligned))``: the aligned features [B, n_sequence * n_feat, H, W] fused."""
        return self.recons_net(self.fusion_conv(aligned))

    def blur_down(self, x, kernel, scale=None):
        return blur_down(x, kernel, self.scale if scale is None else scale)

    def neighbour_flows(self, frames, keys=None, pyramids=None, fast=None):
        """{key: flow from the centre frame to frame i} for each neighbour, each key once.

        ``pyramids`` ({key: flow_net.pyramid(frame)}, e.g. kept per video)
        supplies PWC-Net's feature pyramids; missing keys are added to it.
        ``fast``: deployed PWC-Net layers (models/flow_pwc.py:Network.decode).
        """
        c = self.n_sequence // 2
        keys = list(range(self.n_sequence)) if keys is None else list(keys)
        flows = {}
        for i in range(self.n_sequence):
            if i != c and keys[i] not in flows:
                if pyramids is None:
                    flows[keys[i]] = self.flow_net(frames[c], frames[i], fast=fast)
                else:
                    for j in (c, i):
                        if keys[j] not in pyramids:
                            pyramids[keys[j]] = self.flow_net.pyramid(frames[j])
                    flows[keys[i]] = self.flow_net(frames[c], frames[i],
                                                   pyramids=(pyramids[keys[c]], pyramids[keys[i]]), fast=fast)
        return flows

    def recons_forward(self, frames, feats=None, keys=None, flows=None, parts=None):
        """Reconstruct the centre frame of ``frames`` (a list of [B,C,H,W]).

        ``feats`` may hold each frame's precomputed ``frame_features``, and
        ``keys`` name the frames so that a frame present twice in the window
        is aligned once: the result is the same, the work is not. ``flows``
        ({key: flow}, as ``neighbour_flows`` returns) may give the flows,
        e.g. estimated on whole frames when ``frames`` are tiles of them;
        without them ``neighbour_flows`` estimates them with each frame's
        PWC-Net pyramid computed once (the centre's is shared by its four
        flows, and so are its gradients: the same sums, less work).
        ``parts`` supplies ``frame_features``, ``align``, ``trunk`` and ``tail``
        in place of this network's (an inference engine's deployed ones,
        models/deploy.py); the other layers are always this network's.
        """
        c = self.n_sequence // 2
        parts = self if parts is None else parts
        if feats is None:
            feats = [parts.frame_features(f) for f in frames]
        base = frames[c]
        if not self.HR_in:
            h, w = base.shape[2], base.shape[3]
            base = resize_bilinear(base, (h * self.scale, w * self.scale))
        keys = list(range(self.n_sequence)) if keys is None else list(keys)
        if flows is None:
            flows = self.neighbour_flows(frames, keys, pyramids={})
        warped = {}
        aligned = []
        for i in range(self.n_sequence):
            if i == c:
                aligned.append(feats[i])
                continue
            if keys[i] not in warped:
                warped[keys[i]] = parts.align(feats[i], flows[keys[i]])
            aligned.append(warped[keys[i]])
        return parts.tail(parts.trunk(jt.concat(aligned, 1))) + base

    # -- the reference's entry point ----------------------------------------
    def execute(self, input_dict):
        x = input_dict['x']
        mode = input_dict['mode']
        frames = [x[:, i] for i in range(self.n_sequence)]
        c = self.n_sequence // 2
        kernel = self.kernel_net(jt.concat(frames, 1))
        if mode == 'infer':
            return {'recons': self.recons_forward(frames), 'est_kernel': kernel}, None
        if mode == 'train':
            down = [self.blur_down(f, kernel) for f in frames]
            recons_down = self.recons_forward(down)
            # The HR reconstruction is only a target for the cycle loss:
            # no gradient reaches the reconstruction branch through it.
            with jt.no_grad():
                recons = self.recons_forward(frames)
            cycle = self.blur_down(recons.detach(), kernel)
            return {'input': frames[c], 'recons_down': recons_down, 'input_cycle': cycle,
                    'est_kernel': kernel}, None
        if mode == 'val':
            recons = self.recons_forward(frames)
            cycle = self.blur_down(recons, kernel)
            down = [self.blur_down(f, kernel) for f in frames]
            return {'input': frames[c], 'input_down': down[c], 'input_cycle': cycle, 'recons': recons,
                    'recons_down': self.recons_forward(down), 'est_kernel': kernel}, None
        raise ValueError(f'mode must be train, val or infer, not {mode!r}')

    forward = execute
