"""PyTorch side of tests/test_traps.py (a TEST-ONLY tool; never imports Jittor).

Torch and Jittor must not share a process (their OpenMP / MKL runtimes can
clash), so the Jittor tests start this script once as a small server:

    python tests/torch_ref_ops.py serve

and send it one line per request, ``OP IN.npz OUT.npz``. It loads the arrays
of IN, runs ``OPS[OP]`` on them and writes the results to OUT, then answers
``ok`` (or ``error: ...``) on stdout. ``python torch_ref_ops.py OP IN OUT``
does a single request.

The ``ref_*`` functions restate, with torch's own functional ops, what the
upstream Self-Blind-VSR / PWC-Net code computes (PyTorch 0.4.1 behaviour:
align_corners=True grid sampling, align_corners=False bilinear resizing).
Every op returns float32 numpy arrays; ``w`` inputs are random upstream
gradients, so ``(out * w).sum()`` is the scalar that is differentiated.
"""
import math
import sys
import traceback

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def _t(a, grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_(True) if grad else t


def _np(t):
    return t.detach().cpu().numpy().astype(np.float32)


# -- plain ops ------------------------------------------------------------
def op_grid_sample(x, grid, w, padding):
    x, grid = _t(x, True), _t(grid, True)
    out = F.grid_sample(x, grid, mode='bilinear', padding_mode=str(padding), align_corners=True)
    gx, gg = torch.autograd.grad((out * _t(w)).sum(), [x, grid])
    return {'out': _np(out), 'gx': _np(gx), 'ggrid': _np(gg)}


def op_resize(x, size, w):
    x = _t(x, True)
    out = F.interpolate(x, size=(int(size[0]), int(size[1])), mode='bilinear', align_corners=False)
    gx, = torch.autograd.grad((out * _t(w)).sum(), [x])
    return {'out': _np(out), 'gx': _np(gx)}


def op_upsample_scale(x, scale):
    """The reference's base image: interpolate by a scale factor."""
    out = F.interpolate(_t(x), scale_factor=int(scale), mode='bilinear', align_corners=False)
    return {'out': _np(out)}


def op_adaptive_pool(x, size, w):
    x = _t(x, True)
    out = F.adaptive_avg_pool2d(x, int(size))
    gx, = torch.autograd.grad((out * _t(w)).sum(), [x])
    return {'out': _np(out), 'gx': _np(gx)}


def op_softmax(logits):
    return {'out': _np(torch.softmax(_t(logits), dim=1))}


# -- the reference's functions, restated ------------------------------------
def ref_backward_warp(x, flow, w):
    """PWC-Net's ``Backward``: linspace grid, ones channel, mask > 0.999."""
    x, flow = _t(x, True), _t(flow, True)
    b, _, h, wd = flow.shape
    gx = torch.linspace(-1.0, 1.0, wd).view(1, 1, 1, wd).expand(b, 1, h, wd)
    gy = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, 1, h, wd)
    base = torch.cat([gx, gy], 1)
    norm = torch.cat([flow[:, :1] / ((x.shape[3] - 1.0) / 2.0), flow[:, 1:] / ((x.shape[2] - 1.0) / 2.0)], 1)
    src = torch.cat([x, flow.new_ones([b, 1, h, wd])], 1)
    sampled = F.grid_sample(src, (base + norm).permute(0, 2, 3, 1), mode='bilinear', padding_mode='zeros',
                            align_corners=True)
    # every mask entry is overwritten by a constant upstream: no gradient
    mask = (sampled[:, -1:].detach() > 0.999).float()
    out = sampled[:, :-1] * mask
    g_x, g_flow = torch.autograd.grad((out * _t(w)).sum(), [x, flow])
    return {'out': _np(out), 'mask': _np(mask), 'gx': _np(g_x), 'gflow': _np(g_flow)}


def ref_feature_warp(x, flo, w):
    """Flow_PWC.warp: pixel grid + flow, /(W-1), border padding, ones-mask."""
    x, flo = _t(x, True), _t(flo, True)
    b, c, h, wd = x.shape
    xx = torch.arange(0, wd).view(1, 1, 1, wd).expand(b, 1, h, wd).float()
    yy = torch.arange(0, h).view(1, 1, h, 1).expand(b, 1, h, wd).float()
    v = torch.cat([xx, yy], 1) + flo
    vx = 2.0 * v[:, 0] / max(wd - 1, 1) - 1.0
    vy = 2.0 * v[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([vx, vy], 3)
    out = F.grid_sample(x, grid, padding_mode='border', align_corners=True)
    ones = F.grid_sample(torch.ones(x.shape), grid.detach(), padding_mode='zeros', align_corners=True)
    mask = ones.clone()
    mask[mask < 0.999] = 0
    mask[mask > 0] = 1
    out = out * mask
    g_x, g_flo = torch.autograd.grad((out * _t(w)).sum(), [x, flo])
    return {'out': _np(out), 'mask': _np(mask), 'gx': _np(g_x), 'gflo': _np(g_flo)}


def ref_refiner(x, **params):
    """PWC-Net refiner: 3x3 convs, dilations 1,2,4,8,16,1,1, padding = dilation."""
    y = _t(x)
    dil = [1, 2, 4, 8, 16, 1, 1]
    for i, d in enumerate(dil):
        y = F.conv2d(y, _t(params[f'w{i}']), _t(params[f'b{i}']), padding=d, dilation=d)
        if i < len(dil) - 1:
            y = F.leaky_relu(y, 0.1)
    return {'out': _np(y)}


def ref_estimate_flow(first, second, field):
    """Flow_PWC.estimate_flow with the network replaced by a fixed output ``field``."""
    first, second = _t(first), _t(second)
    h, wd = first.shape[2], first.shape[3]
    w64 = int(math.floor(math.ceil(wd / 64.0) * 64.0))
    h64 = int(math.floor(math.ceil(h / 64.0) * 64.0))
    a = F.interpolate(first, size=(h64, w64), mode='bilinear', align_corners=False)
    b = F.interpolate(second, size=(h64, w64), mode='bilinear', align_corners=False)
    flow = 20.0 * F.interpolate(_t(field), size=(h, wd), mode='bilinear', align_corners=False)
    flow[:, 0] *= float(wd) / float(w64)
    flow[:, 1] *= float(h) / float(h64)
    return {'first': _np(a), 'second': _np(b), 'flow': _np(flow)}


def ref_kernel_net(x, ksize, **p):
    """KernelNet forward from a Jittor state dict (keys prefixed with 'p.')."""
    p = {k[2:]: _t(v) for k, v in p.items()}
    ksize = int(ksize)

    def conv(y, name, pad=1):
        return F.conv2d(y, p[name + '.weight'], p[name + '.bias'], padding=pad)

    def rcab(y, pre):
        r = conv(F.relu(conv(y, pre + '.body.0')), pre + '.body.2')
        s = F.adaptive_avg_pool2d(r, 1)
        s = torch.sigmoid(conv(F.relu(conv(s, pre + '.body.3.conv_du.0', 0)), pre + '.body.3.conv_du.2', 0))
        return r * s + y

    y = conv(_t(x), 'in_conv')
    y = rcab(rcab(y, 'body1.0'), 'body1.1')
    y = F.adaptive_avg_pool2d(y, ksize)
    y = rcab(rcab(y, 'body2.0'), 'body2.1')
    y = conv(conv(y, 'body2.2'), 'body2.3')
    logits = F.linear(F.linear(y.reshape(y.shape[0], ksize * ksize), p['fc_net.0.weight'], p['fc_net.0.bias']),
                      p['fc_net.1.weight'], p['fc_net.1.bias'])
    k = torch.softmax(logits, dim=1).view(y.shape[0], 1, ksize, ksize)
    return {'logits': _np(logits), 'kernel': _np(k)}


def ref_blur_down(x, kernel, w, scale):
    """The reference's blur_down: replicate pad, per-sample per-channel 'same' conv, crop, stride."""
    x, kernel = _t(x, True), _t(kernel, True)
    b, c, _, _ = x.shape
    k = kernel.shape[-1]
    p = k // 2
    xp = F.pad(x, (p, p, p, p), mode='replicate')
    rows = []
    for i in range(b):
        chans = [F.conv2d(xp[i:i + 1, j:j + 1], kernel[i:i + 1], None, stride=1, padding=p) for j in range(c)]
        rows.append(torch.cat(chans, 1))
    blur = torch.cat(rows, 0)[:, :, p:-p, p:-p]
    out = blur[:, :, ::int(scale), ::int(scale)]
    g_x, g_k = torch.autograd.grad((out * _t(w)).sum(), [x, kernel])
    return {'out': _np(out), 'gx': _np(g_x), 'gk': _np(g_k)}


OPS = {name[3:] if name.startswith('op_') else name: fn for name, fn in list(globals().items())
       if callable(fn) and (name.startswith('op_') or name.startswith('ref_'))}


def handle(op, src, dst):
    with np.load(src) as z:
        args = {k: z[k] for k in z.files}
    res = OPS[op](**args)
    np.savez(dst, **res)


def serve():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            handle(*line.split(' '))
            print('ok', flush=True)
        except Exception:  # report to the client, keep serving
            print('error: ' + traceback.format_exc().replace('\n', ' | '), flush=True)


if __name__ == '__main__':
    if sys.argv[1:] == ['serve']:
        serve()
    else:
        handle(*sys.argv[1:4])
