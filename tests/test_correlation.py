"""Correlation op: numpy definition, upstream reference data, channel order, CUDA source."""
import ctypes
import importlib
import re
import shutil

import numpy as np
import pytest

from conftest import run_child

from jittor_sbvsr.ops.correlation import correlation

import jittor as jt  # after jittor_sbvsr, which configures it

corr_mod = importlib.import_module('jittor_sbvsr.ops.correlation')  # even if ops exports the function


def naive(f, s, g):
    """Float64 cost volume and its gradients straight from the definition."""
    f, s, g = (a.astype(np.float64) for a in (f, s, g))
    n, c, h, w = f.shape
    sp = np.pad(s, ((0, 0), (0, 0), (4, 4), (4, 4)))
    out = np.zeros((n, 81, h, w))
    gf, gsp = np.zeros_like(f), np.zeros_like(sp)
    for i in range(9):          # dy + 4
        for j in range(9):      # dx + 4
            d, sh = i * 9 + j, sp[:, :, i:i + h, j:j + w]
            out[:, d] = (f * sh).sum(1) / c
            gf += g[:, d, None] * sh / c
            gsp[:, :, i:i + h, j:j + w] += g[:, d, None] * f / c
    return out, gf, gsp[:, :, 4:-4, 4:-4]


def run(f, s, g):
    a, b = jt.array(f), jt.array(s)
    out = correlation(a, b)
    ga, gb = jt.grad((out * jt.array(g)).sum(), [a, b])
    return out.numpy(), ga.numpy(), gb.numpy()


def rand(rng, shape):
    n, c, h, w = shape
    return (rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal((n, 81, h, w), dtype=np.float32))


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (2, 8, 12, 9), (2, 5, 3, 13), (2, 4, 11, 4),
                                   (2, 1, 1, 1), (2, 17, 10, 21)])
def test_matches_definition(shape):
    f, s, g = rand(np.random.default_rng(sum(shape)), shape)
    got, want = run(f, s, g), naive(f, s, g)
    for name, a, b in zip(('output', 'grad_first', 'grad_second'), got, want):
        assert a.shape == b.shape and a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def test_public_reference(public_case):
    files = sorted((public_case / 'corr').glob('corr_*.npz'))
    assert files, 'no corr_*.npz reference files'
    for p in files:
        z = np.load(p)
        got = run(z['first'], z['second'], z['grad_output'])
        for name, a in zip(('output', 'grad_first', 'grad_second'), got):
            np.testing.assert_allclose(a, z[name], rtol=0, atol=1e-6, err_msg=f'{p.name} {name}')


@pytest.mark.parametrize('dy,dx', [(0, 2), (1, 2), (-3, 1)])
def test_channel_order(dy, dx):
    # second[y+dy, x+dx] = first[y, x]: the peak must be channel (dy+4)*9 + (dx+4).
    f = np.random.default_rng(1).standard_normal((1, 64, 16, 20), dtype=np.float32)
    s = np.roll(f, (dy, dx), axis=(2, 3))
    peak = correlation(jt.array(f), jt.array(s)).numpy()[0, :, 4:-4, 4:-4].argmax(0)
    assert (peak == (dy + 4) * 9 + (dx + 4)).all()


def test_casts_and_checks():
    f = np.random.default_rng(2).standard_normal((1, 3, 4, 5))
    got = correlation(jt.array(f), jt.array(f)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive(f, f, np.zeros((1, 81, 4, 5)))[0], atol=1e-6)
    with pytest.raises(ValueError):
        correlation(jt.zeros((1, 3, 4, 5)), jt.zeros((1, 3, 4, 6)))


def cuda_unit():
    """Kernels and launchers in one translation unit, the host stubs declaring
    what Jittor's code op declares around cuda_src."""
    m, sh = corr_mod, ', '.join(f'long long in0_shape{i}' for i in range(4))
    return (m.CU_HEAD
            + f'extern "C" void fwd(float* in0_p, float* in1_p, float* out0_p, {sh}) {{' + m.CU_FWD + '}\n'
            + f'extern "C" void bwd(float* in0_p, float* in1_p, float* in2_p, float* out0_p, float* out1_p, {sh}) {{'
            + m.CU_BWD + '}\n')


# Runs CUDA source on the CPU: blocks one after another, one std::thread per
# CUDA thread, __syncthreads as a barrier, __shared__ arrays as statics.
EMU = r'''
#include <algorithm>
#include <barrier>
#include <thread>
#include <vector>
using std::min;
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
thread_local dim3 threadIdx; static dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* bar;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() bar->arrive_and_wait()
template <class K, class... A> void launch(K k, dim3 grd, dim3 blk, A... a) {
    gridDim = grd; blockDim = blk;
    for (unsigned z = 0; z < grd.z; z++) for (unsigned y = 0; y < grd.y; y++) for (unsigned x = 0; x < grd.x; x++) {
        blockIdx = dim3(x, y, z);
        std::barrier<> b(blk.x * blk.y); bar = &b;
        std::vector<std::thread> ts;
        for (unsigned ty = 0; ty < blk.y; ty++) for (unsigned tx = 0; tx < blk.x; tx++)
            ts.emplace_back([=] { threadIdx = dim3(tx, ty, 0); k(a...); });
        for (auto& t : ts) t.join();
    }
}
'''


@pytest.mark.skipif(shutil.which('g++') is None, reason='g++ not installed')
def test_cuda_kernels_emulated(tmp_path):
    src = re.sub(r'(\w+)<<<(\w+), (\w+)>>>\(', r'launch(\1, \2, \3, ', cuda_unit())
    (tmp_path / 'emu.cc').write_text(EMU + src, encoding='utf-8')
    lib = tmp_path / 'emu.so'
    r = run_child(['g++', '-std=c++20', '-O1', '-pthread', '-shared', '-fPIC', '-Wno-unknown-pragmas',
                        str(tmp_path / 'emu.cc'), '-o', str(lib)], capture_output=True, text=True,
                  timeout=300, encoding='utf-8')
    assert r.returncode == 0, r.stderr
    so, fp = ctypes.CDLL(str(lib)), ctypes.POINTER(ctypes.c_float)
    # 2 x 3 tiles of 32x8 in x, y; 20 channels is 2.5 forward and 1.25 backward chunks.
    n, c, h, w = shape = (2, 20, 19, 37)
    f, s, g = rand(np.random.default_rng(4), shape)
    o, gf, gs = np.zeros_like(g), np.zeros_like(f), np.zeros_like(f)
    ptr = lambda a: a.ctypes.data_as(fp)  # noqa: E731
    dims = [ctypes.c_longlong(v) for v in shape]
    so.fwd(ptr(f), ptr(s), ptr(o), *dims)
    so.bwd(ptr(f), ptr(s), ptr(g), ptr(gf), ptr(gs), *dims)
    for name, a, b in zip(('output', 'grad_first', 'grad_second'), (o, gf, gs), naive(f, s, g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not installed')
def test_cuda_source_compiles(tmp_path):
    cu = tmp_path / 'corr.cu'
    cu.write_text(cuda_unit(), encoding='utf-8')
    r = run_child(['nvcc', '-arch=sm_80', '-Xptxas', '-v', '-c', str(cu), '-o', str(tmp_path / 'corr.o')],
                  capture_output=True, text=True,
                  timeout=300, encoding='utf-8')
    assert r.returncode == 0, r.stderr
    for k in ('corr_fwd', 'corr_bwd_first', 'corr_bwd_second'):
        assert k in r.stderr
    spills = re.findall(r'(\d+) bytes spill stores', r.stderr)
    assert spills and set(spills) == {'0'}, r.stderr  # 81 accumulators must stay in registers


@pytest.mark.skipif(not jt.has_cuda, reason='Jittor has no CUDA here')
def test_cuda_matches_cpu():
    # Tiles of 32x8 pixels and 8/16-channel chunks: cross every boundary.
    shape = (2, 20, 19, 37)
    f, s, g = rand(np.random.default_rng(3), shape)
    cpu = run(f, s, g)
    with jt.flag_scope(use_cuda=1):
        gpu = run(f, s, g)
    for name, a, b in zip(('output', 'grad_first', 'grad_second'), gpu, cpu):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
