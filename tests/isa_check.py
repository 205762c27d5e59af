"""Run by tests/test_isa.py in a subprocess (DNNL_MAX_CPU_ISA is read once per process).

Prints one JSON line: the ISA oneDNN uses, and for each fused op (the chains
also after their head conv: in_conv, fusion_conv), layout and shape the
largest difference from Jittor's own operators, relative to the
output's peak; plus the paths a deployed demo-sized model runs.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import numpy as np  # noqa: E402

import jittor_sbvsr  # noqa: E402,F401
from jittor_sbvsr import runtime  # noqa: E402

runtime.select_device('cpu')
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402

from jittor_sbvsr.models import PWC_Recons  # noqa: E402
from jittor_sbvsr.models.deploy import FusedChain, InferenceNet  # noqa: E402
from jittor_sbvsr.models.tails import ComposedTail, FusedTail, PlainTail, tail_layers  # noqa: E402
from jittor_sbvsr.ops import fused_conv  # noqa: E402


def rel(ref, got):
    ref, got = ref.numpy(), got.numpy()
    if ref.shape != got.shape:
        return float('inf')
    return float(np.abs(ref.astype(np.float64) - got).max() / max(1.0, np.abs(ref).max()))


out = {'isa': fused_conv.onednn_isa(), 'errors': {}, 'paths': {}, 'winograd': {}}
HEADS = {'frame_features': ('in_conv', 'extra_feat'), 'trunk': ('fusion_conv', 'recons_net')}


def headed(net, layout, algorithm='direct'):
    """{method of net: the fused op for it, its conv before its chain}"""
    return {k: FusedChain(getattr(net, b), layout, algorithm, getattr(net, h)[0]) for k, (h, b) in HEADS.items()}


def check_headed(net, ops, key, h, w):
    for k, op in ops.items():
        x = jt.randn(1, op.in_channels, h, w)
        with jt.no_grad():
            out['errors'][f'{k} {key}'] = rel(getattr(net, k)(x), op(x))

for c in (16, 32):
    jt.set_global_seed(c)
    net = PWC_Recons(n_feat=c, extra_RBS=1, recons_RBS=2)
    for m in net.modules():  # non-zero biases, so that a dropped bias shows
        if isinstance(m, nn.Conv2d):
            m.bias.assign(jt.randn(m.bias.shape) * 0.1)
    up, outc = tail_layers(net)
    for layout in fused_conv.LAYOUTS:
        chain, tail = FusedChain(net.recons_net, layout), FusedTail(up, outc, layout)
        composed = ComposedTail(up, outc, tail)
        ops = headed(net, layout)
        # odd sides, 1-3 pixel strips, a 1-pixel-tall tile
        for h, w in [(9, 13), (1, 7), (3, 2), (12, 17)]:
            x = jt.randn(1, c, h, w)
            with jt.no_grad():
                key = f'{c}/{layout}/{h}x{w}'
                out['errors']['chain ' + key] = rel(net.recons_net(x), chain(x))
                ref = net.tail(x)
                out['errors']['tail ' + key] = rel(ref, tail(x))
                out['errors']['composed ' + key] = rel(ref, composed(x))
            check_headed(net, ops, key, h, w)
    # Winograd where oneDNN has it (else direct): its 2x3 kernel below 16x16, its 4x3 above
    for layout in ('auto', 'nChw16c'):
        chain, ops = FusedChain(net.recons_net, layout, 'auto'), headed(net, layout, 'auto')
        out['winograd'][f'{c}/{layout}'] = fused_conv.chain_algorithm((1, c, 16, 20), layout, 'auto')
        out['winograd'][f'{c}/{layout}/fusion_conv'] = fused_conv.chain_algorithm((1, c, 16, 20), layout, 'auto',
                                                                                  (5 * c, 3))
        for h, w in [(9, 13), (16, 20)]:
            x = jt.randn(1, c, h, w)
            with jt.no_grad():
                out['errors'][f'winograd chain {c}/{layout}/{h}x{w}'] = rel(net.recons_net(x), chain(x))
            check_headed(net, ops, f'winograd {c}/{layout}/{h}x{w}', h, w)
    warnings = []
    model = InferenceNet(net, warn=warnings.append)
    out['paths'][c] = model.paths
    out['warnings'] = out.get('warnings', []) + warnings
    plain = PlainTail(net)  # the deployed tail on a whole frame
    x = jt.randn(1, c, 20, 24)
    with jt.no_grad():
        out['errors'][f'deployed {c}'] = rel(plain(x), model.tail(x))
    check_headed(net, {k: getattr(model, k) for k in HEADS}, f'deployed {c}', 20, 24)
print('ISA_CHECK ' + json.dumps(out), flush=True)
