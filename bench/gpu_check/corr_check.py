"""CUDA correlation op vs the CPU op, forward and backward, at PWC-Net-like shapes (GPU check only)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.getcwd())
import jittor_sbvsr  # noqa: E402,F401
from jittor_sbvsr import runtime as rt  # noqa: E402
from jittor_sbvsr.ops.correlation import correlation  # noqa: E402
import jittor as jt  # noqa: E402

rt.select_device(os.environ.get('CHECK_DEVICE', 'cuda'))


def run(f, s, g):
    a, b = jt.array(f), jt.array(s)
    out = correlation(a, b)
    ga, gb = jt.grad((out * jt.array(g)).sum(), [a, b])
    return out.numpy(), ga.numpy(), gb.numpy()


bad = 0
for shape in [(1, 32, 45, 80), (1, 64, 23, 40), (1, 96, 12, 20), (2, 196, 3, 5), (1, 128, 6, 10), (1, 7, 33, 65)]:
    rng = np.random.default_rng(sum(shape))
    n, c, h, w = shape
    f, s = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    g = rng.standard_normal((n, 81, h, w), dtype=np.float32)
    gpu = run(f, s, g)
    with jt.flag_scope(use_cuda=0):
        cpu = run(f, s, g)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(gpu, cpu)]
    fail = any(d > 1e-5 for d in diffs)
    bad += fail
    print(f'{"FAIL" if fail else "ok  "} shape {shape}: max|gpu-cpu| out {diffs[0]:.1e} '
          f'grad_first {diffs[1]:.1e} grad_second {diffs[2]:.1e}', flush=True)
print('CORR_CHECK', 'FAILED' if bad else 'OK', flush=True)
sys.exit(1 if bad else 0)
