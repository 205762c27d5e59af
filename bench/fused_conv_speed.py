#!/usr/bin/env python
"""Plain Jittor vs fused oneDNN (ops/fused_conv.py) on the CPU; not a test.

    python bench/fused_conv_speed.py --lr-size 180x320 --threads 2

Times the 20-ResBlock trunk and the upsampling + output convs of PWC_Recons
(n_feat 128) at one LR size, plain and fused alternating in one process
(best of ``--reps``, each after ``jt.sync_all(True)``), and prints the
largest output differences. The parts ``fusion_conv+trunk`` and
``in_conv+extra_feat`` time the conv before a chain: Jittor's conv, then the
fused chain ("plain") against the conv fused into the chain. Prints one
JSON object.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--lr-size', default='180x320')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--blocks', type=int, default=20)
    p.add_argument('--layout', default='auto', help='auto | nhwc | nChw8c | nChw16c (ops/fused_conv.py)')
    p.add_argument('--algorithm', default='direct', help="the fused chains': direct | winograd | auto")
    p.add_argument('--parts', default='trunk,tail,fusion_conv+trunk,in_conv+extra_feat')
    args = p.parse_args()
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    import numpy as np

    import jittor_sbvsr  # noqa: F401
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.models.deploy import FusedChain
    from jittor_sbvsr.models.tails import FusedTail, tail_layers
    from jittor_sbvsr.ops import fused_conv

    import jittor as jt
    jt.flags.use_cuda = 0
    if not fused_conv.available():
        sys.exit('fused_conv_speed: oneDNN is not enabled (run env/setup.sh)')
    h, w = (int(v) for v in args.lr_size.split('x'))
    jt.set_global_seed(0)
    net = PWC_Recons(recons_RBS=args.blocks)
    x = jt.randn(1, 128, h, w) * 0.1
    x.sync()
    xa, xf = jt.randn(1, 5 * 128, h, w) * 0.1, jt.rand(1, 3, h, w)
    jt.sync([xa, xf])
    chain, tail = FusedChain(net.recons_net, args.layout, args.algorithm), FusedTail(*tail_layers(net), args.layout)
    feat = FusedChain(net.extra_feat, args.layout, args.algorithm)
    trunk_h = FusedChain(net.recons_net, args.layout, args.algorithm, net.fusion_conv[0])
    feat_h = FusedChain(net.extra_feat, args.layout, args.algorithm, net.in_conv[0])
    parts = {'trunk': (lambda: net.recons_net(x), lambda: chain(x)),
             'tail': (lambda: net.tail(x), lambda: tail(x)),
             'fusion_conv+trunk': (lambda: chain(net.fusion_conv(xa)), lambda: trunk_h(xa)),
             'in_conv+extra_feat': (lambda: feat(net.in_conv(xf)), lambda: feat_h(xf))}
    res = {'lr_size': args.lr_size, 'threads': args.threads, 'blocks': args.blocks, 'layout': args.layout,
           'algorithm': args.algorithm, 'onednn_isa': fused_conv.onednn_isa()}
    for name in args.parts.split(','):
        fns = parts[name]
        best, outs = [float('inf')] * 2, [None] * 2
        with jt.no_grad():
            for _ in range(args.reps):
                for i, fn in enumerate(fns):
                    jt.sync_all(True)
                    t0 = time.perf_counter()
                    outs[i] = fn()
                    outs[i].sync()
                    jt.sync_all(True)
                    best[i] = min(best[i], time.perf_counter() - t0)
        a, b = (v.numpy() for v in outs)
        res[name] = {'plain_s': round(best[0], 3), 'fused_s': round(best[1], 3),
                     'speedup': round(best[0] / best[1], 3),
                     'max_abs_diff': float(np.abs(a - b).max()), 'max_abs': float(np.abs(a).max())}
    res['loadavg_1min'] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == '__main__':
    main()
