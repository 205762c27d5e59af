"""Jittor + CUDA smoke test through the project's runtime (GPU check only)."""
import os
import sys
import time

T0 = time.time()


def say(*a):
    print(f'[smoke {time.time() - T0:6.1f}s]', *a, flush=True)


sys.path.insert(0, os.getcwd())
say('importing jittor_sbvsr + jittor (first run compiles Jittor core with CUDA) ...')
import numpy as np  # noqa: E402
import jittor_sbvsr  # noqa: E402,F401
from jittor_sbvsr import runtime as rt  # noqa: E402
import jittor as jt  # noqa: E402

say('jittor', jt.__version__, 'numpy', np.__version__, 'from', np.__file__)
say('has_cuda', jt.has_cuda, 'devices', jt.core.get_device_count(), 'nvcc', jt.compiler.nvcc_path)
ce = jt.compile_extern
say('extern libs loaded:', {k: getattr(ce, k, None) is not None for k in ('cublas', 'cudnn', 'curand', 'cufft')},
    'cub_ops', getattr(ce, 'cub_ops', None) is not None, 'mkl_ops', ce.mkl_ops is not None)
say('cuda_archs', list(getattr(jt.flags, 'cuda_archs', [])))
nf = jt.flags.nvcc_flags
say('nvcc_flags (arch/std part):', ' '.join(t for t in nf.split() if t.startswith(('-arch', '-code', '-std'))))
dev = rt.select_device(os.environ.get('SMOKE_DEVICE', 'cuda'))
say('select_device ->', dev, '|', rt.describe(), '| use_tensorcore', getattr(jt.flags, 'use_tensorcore', None),
    '| NVIDIA_TF32_OVERRIDE', os.environ.get('NVIDIA_TF32_OVERRIDE'))

ok = True


def check(name, fn):
    global ok
    t = time.time()
    try:
        msg = fn()
        say(f'OK   {name} ({time.time() - t:.1f}s): {msg}')
    except Exception as e:  # keep going: report every failure
        ok = False
        say(f'FAIL {name} ({time.time() - t:.1f}s): {type(e).__name__}: {str(e)[-3000:]}')


def t_rand():
    v = float(np.asarray((jt.rand(100) + 1).sum().numpy()).reshape(-1)[0])
    assert 100 <= v <= 200, v
    return f'sum={v:.3f}'


def t_matmul():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 512), dtype=np.float32), rng.standard_normal((512, 128), dtype=np.float32)
    got = jt.matmul(jt.array(a), jt.array(b)).numpy()
    ref = a.astype(np.float64) @ b.astype(np.float64)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel
    return f'max rel err {rel:.2e} (TF32 would be ~1e-3)'


def t_conv():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 64, 40, 48), dtype=np.float32)
    w = rng.standard_normal((32, 64, 3, 3), dtype=np.float32) * 0.05
    g = rng.standard_normal((2, 32, 40, 48), dtype=np.float32)

    def run():
        xv, wv = jt.array(x), jt.array(w)
        y = jt.nn.conv2d(xv, wv, padding=1)
        gx, gw = jt.grad((y * jt.array(g)).sum(), [xv, wv])
        return y.numpy(), gx.numpy(), gw.numpy()

    gpu = run()
    with jt.flag_scope(use_cuda=0):
        cpu = run()
    out = []
    for name, a, b in zip(('y', 'dx', 'dw'), gpu, cpu):
        rel = np.abs(a - b).max() / np.abs(b).max()
        out.append(f'{name} rel {rel:.1e}')
        if rel > 1e-4:
            out.append('(TF32 or wrong algo?)')
            raise AssertionError(' '.join(out))
    return ', '.join(out) + f' | cudnn used: {jt.cudnn is not None}'


def t_interp_reduce():
    x = jt.array(np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8))
    y = jt.nn.interpolate(x, size=(16, 16), mode='bilinear', align_corners=False)
    m = x.mean(dims=(2, 3)).numpy()
    assert y.shape == [2, 3, 16, 16] or tuple(y.shape) == (2, 3, 16, 16)
    np.testing.assert_allclose(m, np.arange(2 * 3 * 64, dtype=np.float64).reshape(2, 3, 64).mean(-1), rtol=1e-6)
    return 'ok'


def t_corr():
    from jittor_sbvsr.ops.correlation import correlation
    rng = np.random.default_rng(2)
    f, s = (rng.standard_normal((1, 16, 20, 28), dtype=np.float32) for _ in range(2))
    a = correlation(jt.array(f), jt.array(s)).numpy()
    with jt.flag_scope(use_cuda=0):
        b = correlation(jt.array(f), jt.array(s)).numpy()
    d = np.abs(a - b).max()
    assert d < 1e-5, d
    return f'fwd max abs diff gpu-cpu {d:.1e}'


only = [k for k in os.environ.get('SMOKE_ONLY', '').split(',') if k]
for key, name, fn in (('rand', 'rand+sum (curand)', t_rand), ('matmul', 'matmul 256x512x128', t_matmul),
                      ('conv', 'conv2d fwd+bwd vs CPU', t_conv), ('interp', 'interpolate+mean', t_interp_reduce),
                      ('corr', 'correlation op (jt.code cuda_src) vs CPU', t_corr)):
    if not only or key in only:
        check(name, fn)
jt.sync_all(True)
say('SMOKE_OK' if ok else 'SMOKE_FAILED')
sys.exit(0 if ok else 1)
