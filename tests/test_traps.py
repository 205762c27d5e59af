"""One test per numerical trap of docs/porting.md ("Traps"); each fails if its trap returns.

The oracle is torch's own functional ops (torch is a test-only tool here),
run in a separate process by tests/torch_ref_ops.py: torch and Jittor are
never imported into the same process. Trap 5 (correlation) is covered by
tests/test_correlation.py; traps 11-15 are pinned elsewhere (docs/porting.md says where).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import child_env

import jittor_sbvsr  # noqa: F401  (configures Jittor; must precede jittor)
import jittor as jt
from jittor import nn
from jittor_sbvsr.models import Flow_PWC, KernelNet, PWC_Recons
from jittor_sbvsr.models.flow_pwc import backward_warp
from jittor_sbvsr.models.pwc_recons import blur_down
from jittor_sbvsr.ops.sampling import adaptive_avg_pool2d, grid_sample, resize_bilinear

HERE = Path(__file__).resolve().parent
SMALL = dict(n_feat=8, extra_RBS=1, recons_RBS=1)


# -- the torch side ------------------------------------------------------------
@pytest.fixture(scope='session')
def torch_ref(tmp_path_factory):
    """``torch_ref(op, **arrays) -> dict``: one torch server for the whole session."""
    d = tmp_path_factory.mktemp('torch_ref')
    err = open(d / 'stderr.txt', 'w', encoding='utf-8')
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, str(HERE / 'torch_ref_ops.py'), 'serve'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(env), encoding='utf-8')
    n = [0]

    def call(op, **arrays):
        n[0] += 1
        src, dst = d / f'in{n[0]}.npz', d / f'out{n[0]}.npz'
        np.savez(src, **arrays)
        proc.stdin.write(f'{op} {src} {dst}\n')
        proc.stdin.flush()
        line = proc.stdout.readline()
        if line.strip() != 'ok':
            err.flush()
            raise AssertionError(f'torch reference {op!r} failed: {line.strip() or "(no answer)"}\n'
                                 + (d / 'stderr.txt').read_text(encoding='utf-8')[-3000:])
        with np.load(dst) as z:
            return {k: z[k] for k in z.files}

    yield call
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    err.close()


# -- helpers -------------------------------------------------------------------
def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def jgrads(out, w, inputs):
    """Gradients of sum(out * w) w.r.t. ``inputs`` (Jittor Vars), as numpy."""
    return [g.numpy() for g in jt.grad((out * jt.array(w)).sum(), inputs)]


def close(got, want, tol=1e-5, what=''):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)
    assert got.shape == want.shape, what


def np_sample(img, px, py, padding):
    """Float64 bilinear sample of img [C,H,W] at pixel positions px, py ([Ho,Wo]).

    An independent oracle for the mask tests: 'zeros' reads 0 outside,
    'border' clamps the position into the image.
    """
    c, h, w = img.shape
    px, py = px.astype(np.float64), py.astype(np.float64)
    if padding == 'border':
        px, py = np.clip(px, 0, w - 1), np.clip(py, 0, h - 1)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    out = np.zeros((c,) + px.shape)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(px - xi)) * (1 - np.abs(py - yi))
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out += np.where(ok, wgt, 0) * img[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return out


@pytest.fixture(scope='module')
def flow_pwc():
    jt.set_global_seed(3)
    return Flow_PWC()


# -- trap 1: grid_sample must use align_corners=True ----------------------------
def _grid_points(rng, b, oh, ow, h, w):
    """Random positions inside and outside the image, plus exact edges and corners."""
    g = rng.uniform(-1.6, 1.6, (b, oh, ow, 2)).astype(np.float32)
    g[0, 0, :, 0], g[0, 1, :, 0] = -1.0, 1.0          # left / right edge columns
    g[0, 2, :, 1], g[1, 0, :, 1] = -1.0, 1.0          # top / bottom edge rows
    g[1, 1, :4] = [[1, 1], [-1, -1], [1, -1], [-1, 1]]  # corners
    ix, iy = (g[..., 0] + 1) * (w - 1) / 2, (g[..., 1] + 1) * (h - 1) / 2
    inside = (ix > 0) & (ix < w - 1) & (iy > 0) & (iy < h - 1)
    far = (ix < -1) | (ix > w) | (iy < -1) | (iy > h)
    assert inside.sum() > 20 and far.sum() > 10 and (~inside & ~far).sum() > 10
    return g


@pytest.mark.parametrize('padding', ['zeros', 'border'])
def test_grid_sample_align_corners_true(torch_ref, padding):
    # Trap 1: PyTorch 0.4.1 grid_sample = align_corners=True (forward and both gradients).
    rng = np.random.default_rng(11)
    x = randn(rng, 2, 3, 5, 7)
    grid = _grid_points(rng, 2, 6, 8, 5, 7)
    w = randn(rng, 2, 3, 6, 8)
    ref = torch_ref('grid_sample', x=x, grid=grid, w=w, padding=np.array(padding))
    jx, jg = jt.array(x), jt.array(grid)
    out = grid_sample(jx, jg, padding)
    gx, gg = jgrads(out, w, [jx, jg])
    close(out.numpy(), ref['out'], what='output')
    close(gx, ref['gx'], what='grad input')
    close(gg, ref['ggrid'], what='grad grid')


def test_warps_identity_at_zero_flow(flow_pwc):
    # Trap 1: with align_corners=False a zero flow would shift/blur the image.
    rng = np.random.default_rng(12)
    x = randn(rng, 2, 4, 6, 9)
    zero = jt.zeros((2, 2, 6, 9))
    out, mask = flow_pwc.warp(jt.array(x), zero)
    np.testing.assert_allclose(out.numpy(), x, rtol=0, atol=1e-6)
    assert np.all(mask.numpy() == 1)
    np.testing.assert_allclose(backward_warp(jt.array(x), zero).numpy(), x, rtol=0, atol=1e-6)


def _random_flow(rng, b, h, w, scale=2.0):
    return (scale * rng.standard_normal((b, 2, h, w))).astype(np.float32)


def test_backward_warp_matches_reference(torch_ref):
    # Traps 1+2: PWC `Backward` = linspace grid, flow/((W-1)/2), zeros padding, ones-channel mask.
    rng = np.random.default_rng(13)
    x, flow, w = randn(rng, 2, 4, 6, 9), _random_flow(rng, 2, 6, 9), randn(rng, 2, 4, 6, 9)
    ref = torch_ref('ref_backward_warp', x=x, flow=flow, w=w)
    assert 0 < ref['mask'].mean() < 1  # some samples leave the image
    jx, jf = jt.array(x), jt.array(flow)
    out = backward_warp(jx, jf)
    gx, gf = jgrads(out, w, [jx, jf])
    close(out.numpy(), ref['out'], what='output')
    close(gx, ref['gx'], what='grad input')
    close(gf, ref['gflow'], what='grad flow')


def test_feature_warp_matches_reference(torch_ref, flow_pwc):
    # Traps 1+2: Flow_PWC.warp = pixel grid /(W-1), border padding, zeros-padded ones mask.
    rng = np.random.default_rng(14)
    x, flow, w = randn(rng, 2, 4, 6, 9), _random_flow(rng, 2, 6, 9), randn(rng, 2, 4, 6, 9)
    ref = torch_ref('ref_feature_warp', x=x, flo=flow, w=w)
    assert 0 < ref['mask'].mean() < 1
    jx, jf = jt.array(x), jt.array(flow)
    out, mask = flow_pwc.warp(jx, jf)
    gx, gf = jgrads(out, w, [jx, jf])
    close(out.numpy(), ref['out'], what='output')
    np.testing.assert_array_equal(mask.numpy(), ref['mask'])
    close(gx, ref['gx'], what='grad input')
    close(gf, ref['gflo'], what='grad flow')


# -- trap 2: occupancy masks -----------------------------------------------------
def _pushing_flow(h, w):
    """Flows that move samples out of the image, and some by a hair only.

    In row 0 of sample 0, columns 0-2 are shifted up by 0.0005 px (ones-sample
    0.9995: kept), columns 3-5 by 0.003 px (0.997: dropped): this pins the
    0.999 threshold.
    """
    f = np.zeros((2, 2, h, w), np.float32)
    f[0, 0] = 3.0                       # right: the last 3 columns leave
    f[0, 1, 0, :3], f[0, 1, 0, 3:] = -0.0005, -0.003
    f[1, 0], f[1, 1] = -2.25, 2.5       # left and down
    return f


def _expected(x, flow, padding):
    b, _, h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w]
    samples, ones = [], []
    for i in range(b):
        px, py = xx + flow[i, 0].astype(np.float64), yy + flow[i, 1].astype(np.float64)
        samples.append(np_sample(x[i].astype(np.float64), px, py, padding))
        ones.append(np_sample(np.ones((1, h, w)), px, py, 'zeros'))
    return np.stack(samples), np.stack(ones)


def test_backward_warp_occupancy_mask():
    # Trap 2: `Backward` zeroes every pixel whose sample is not fully inside (ones-sample > 0.999).
    rng = np.random.default_rng(21)
    x = (rng.random((2, 3, 6, 9)) + 1).astype(np.float32)  # no zeros in the image
    flow = _pushing_flow(6, 9)
    sample, ones = _expected(x, flow, 'zeros')
    keep = ones > 0.999
    assert keep[0, 0, 0, 0] and not keep[0, 0, 0, 3]  # the threshold rows
    assert 0.3 < keep.mean() < 0.9
    out = backward_warp(jt.array(x), jt.array(flow)).numpy()
    np.testing.assert_array_equal(out == 0, np.broadcast_to(~keep, out.shape))
    np.testing.assert_allclose(out, sample * keep, rtol=1e-5, atol=1e-5)


def test_feature_warp_occupancy_mask(flow_pwc):
    # Trap 2: Flow_PWC.warp's mask is 0 exactly where the sample leaves (ones-sample < 0.999)
    # and the output there is 0, not the border-padded value.
    rng = np.random.default_rng(22)
    x = (rng.random((2, 3, 6, 9)) + 1).astype(np.float32)
    flow = _pushing_flow(6, 9)
    border, ones = _expected(x, flow, 'border')
    keep = np.broadcast_to(ones >= 0.999, border.shape)
    assert keep[0, 0, 0, 0] and not keep[0, 0, 0, 3]
    assert 0.3 < keep.mean() < 0.9 and np.all(border > 0.5)
    out, mask = flow_pwc.warp(jt.array(x), jt.array(flow))
    out, mask = out.numpy(), mask.numpy()
    np.testing.assert_array_equal(mask, keep.astype(np.float32))
    assert np.all(out[~keep] == 0)
    np.testing.assert_allclose(out[keep], border[keep], rtol=1e-5, atol=1e-5)


# -- trap 3: refiner dilations ----------------------------------------------------
def _refiner_convs(flow_pwc):
    return [m for m in flow_pwc.moduleNetwork.moduleRefiner.moduleMain if isinstance(m, nn.Conv2d)]


def test_refiner_dilations(flow_pwc):
    # Trap 3: dilations 1,2,4,8,16,1,1 with padding == dilation (shapes alone cannot tell).
    convs = _refiner_convs(flow_pwc)
    assert [tuple(c.dilation) for c in convs] == [(d, d) for d in (1, 2, 4, 8, 16, 1, 1)]
    assert [tuple(c.padding) for c in convs] == [tuple(c.dilation) for c in convs]
    assert all(tuple(c.stride) == (1, 1) and c.weight.shape[2:] == (3, 3) for c in convs)


def test_refiner_matches_torch(torch_ref, flow_pwc):
    # Trap 3, functionally: same weights, same output as a torch refiner with the right dilations.
    rng = np.random.default_rng(31)
    x = randn(rng, 1, 565, 20, 24)  # larger than 16 px, so dilation 16 reaches real pixels
    params = {}
    for i, c in enumerate(_refiner_convs(flow_pwc)):
        params[f'w{i}'], params[f'b{i}'] = c.weight.numpy(), c.bias.numpy()
    ref = torch_ref('ref_refiner', x=x, **params)
    out = flow_pwc.moduleNetwork.moduleRefiner(jt.array(x)).numpy()
    np.testing.assert_allclose(out, ref['out'], rtol=1e-4, atol=1e-4 * np.abs(ref['out']).max())


# -- trap 4: PyTorch's adaptive average pooling windows ------------------------
@pytest.mark.parametrize('hw', [(32, 48), (13, 13), (27, 40), (100, 7)])
def test_adaptive_avg_pool_matches_torch(torch_ref, hw):
    # Trap 4: bins [floor(i*H/13), ceil((i+1)*H/13)), forward and gradient.
    rng = np.random.default_rng(sum(hw))
    x, w = randn(rng, 2, 3, *hw), randn(rng, 2, 3, 13, 13)
    ref = torch_ref('adaptive_pool', x=x, size=np.array(13), w=w)
    jx = jt.array(x)
    out = adaptive_avg_pool2d(jx, 13)
    gx, = jgrads(out, w, [jx])
    close(out.numpy(), ref['out'], what='output')
    close(gx, ref['gx'], what='grad input')


def test_jittor_adaptive_pool_differs(torch_ref):
    # Trap 4, documented: Jittor's own AdaptiveAvgPool2d uses other windows for 32x48.
    x = randn(np.random.default_rng(41), 1, 2, 32, 48)
    ref = torch_ref('adaptive_pool', x=x, size=np.array(13), w=np.ones((1, 2, 13, 13), np.float32))
    theirs = nn.AdaptiveAvgPool2d(13)(jt.array(x)).numpy()
    assert np.abs(theirs - ref['out']).max() > 1e-2


# -- traps 4 + 7: KernelNet end to end, softmax on dim 1 -------------------------
def test_kernel_net_softmax_dim1(torch_ref):
    # Trap 7: nn.Softmax() without dim = softmax over the 169 logits of each sample.
    # Trap 4 too: 32x48 is not a multiple of 13, so the pooling windows matter.
    jt.set_global_seed(7)
    net = KernelNet(in_c=15, ksize=13)
    net.eval()
    rng = np.random.default_rng(71)
    x = (rng.random((2, 15, 32, 48)) * 2).astype(np.float32)
    # random biases spread the logits, so that a wrong softmax axis is visible
    net.fc_net[1].bias.assign(jt.array(randn(rng, 169)))
    state = {'p.' + k: v.numpy() for k, v in net.state_dict().items()}
    ref = torch_ref('ref_kernel_net', x=x, ksize=np.array(13), **state)
    with jt.no_grad():
        k = net(jt.array(x)).numpy()
    assert k.shape == (2, 1, 13, 13)
    np.testing.assert_allclose(k.reshape(2, -1).sum(1), [1, 1], rtol=0, atol=1e-5)
    assert ref['kernel'].max() > 3 / 169
    np.testing.assert_allclose(k, ref['kernel'], rtol=1e-4, atol=1e-6)


# -- trap 6: bilinear resizing (align_corners=False) and flow estimation ----------
@pytest.mark.parametrize('src,dst', [((32, 48), (64, 64)), ((64, 64), (32, 48)), ((9, 13), (36, 52)),
                                     ((180, 320), (192, 320))])
def test_resize_bilinear_matches_torch(torch_ref, src, dst):
    # Trap 6 (and 8): torch interpolate(mode='bilinear', align_corners=False), forward and gradient.
    rng = np.random.default_rng(src[0] + dst[1])
    x, w = randn(rng, 1, 2, *src), randn(rng, 1, 2, *dst)
    ref = torch_ref('resize', x=x, size=np.array(dst), w=w)
    jx = jt.array(x)
    out = resize_bilinear(jx, dst)
    gx, = jgrads(out, w, [jx])
    close(out.numpy(), ref['out'], what='output')
    close(gx, ref['gx'], tol=1e-4, what='grad input')


@pytest.mark.parametrize('hw', [(36, 50), (70, 130)])
def test_estimate_flow_matches_reference(torch_ref, flow_pwc, monkeypatch, hw):
    # Trap 6: resize to the next multiple of 64, x20, resize back, x by W/W64, y by H/H64.
    h, w = hw
    h64, w64 = -(-h // 64) * 64, -(-w // 64) * 64
    rng = np.random.default_rng(h * w)
    first, second = rng.random((2, 3, h, w), np.float32), rng.random((2, 3, h, w), np.float32)
    field = randn(rng, 2, 2, h64 // 4, w64 // 4)  # the network's 1/4-resolution output
    seen = []

    def stub(a, b, fast=None):
        seen.append((a.numpy(), b.numpy()))
        return jt.array(field)

    monkeypatch.setattr(flow_pwc, 'moduleNetwork', stub)
    ref = torch_ref('ref_estimate_flow', first=first, second=second, field=field)
    flow = flow_pwc(jt.array(first), jt.array(second)).numpy()
    assert len(seen) == 1 and seen[0][0].shape == (2, 3, h64, w64)
    close(seen[0][0], ref['first'], what='resized first frame')
    close(seen[0][1], ref['second'], what='resized second frame')
    close(flow, ref['flow'], tol=1e-4, what='flow')


@pytest.mark.parametrize('level,scale', [(2, 5.0), (3, 2.5), (4, 1.25), (5, 0.625)])
def test_decoder_backward_flow_scale(flow_pwc, monkeypatch, level, scale):
    # Trap 6: the upsampled flow is multiplied by 5.0, 2.5, 1.25, 0.625 (levels 2..5) before `Backward`.
    from jittor_sbvsr.models import flow_pwc as fp_mod
    dec = getattr(flow_pwc.moduleNetwork, {2: 'moduleTwo', 3: 'moduleThr', 4: 'moduleFou', 5: 'moduleFiv'}[level])
    feat_c = {2: 32, 3: 64, 4: 96, 5: 128}[level]
    prev_c = {2: 149, 3: 181, 4: 213, 5: 81}[level] + 448  # previous level's decoder features
    rng = np.random.default_rng(60 + level)
    prev = {'flow': jt.array(randn(rng, 1, 2, 3, 3)), 'feat': jt.array(randn(rng, 1, prev_c, 3, 3))}
    seen = []
    real = fp_mod.backward_warp

    def spy(x, flow):
        seen.append(flow.numpy())
        return real(x, flow)

    monkeypatch.setattr(fp_mod, 'backward_warp', spy)
    with jt.no_grad():
        dec(jt.array(randn(rng, 1, feat_c, 6, 6)), jt.array(randn(rng, 1, feat_c, 6, 6)), prev)
        up = dec.moduleUpflow(prev['flow']).numpy()
    assert len(seen) == 1, 'the decoder must warp the second features once, with backward_warp'
    np.testing.assert_allclose(seen[0], up * scale, rtol=1e-6, atol=1e-7)


# -- trap 8: base image ------------------------------------------------------------
def test_base_image_is_bilinear_x4(torch_ref):
    # Trap 8: recons = network + bilinear x4 (align_corners=False) of the centre frame.
    jt.set_global_seed(8)
    model = PWC_Recons(**SMALL)
    model.eval()
    last = model.out_conv[1]
    last.weight.assign(jt.zeros(last.weight.shape))
    last.bias.assign(jt.zeros(last.bias.shape))
    x = np.random.default_rng(81).random((1, 5, 3, 32, 48), np.float32)
    ref = torch_ref('upsample_scale', x=x[:, 2], scale=np.array(4))['out']
    with jt.no_grad():
        res, _ = model({'x': jt.array(x), 'mode': 'infer'})
    recons = res['recons'].numpy()
    assert recons.shape == (1, 3, 128, 192)
    np.testing.assert_allclose(recons, ref, rtol=0, atol=1e-6)


# -- trap 9: blur_down --------------------------------------------------------------
def test_blur_down_matches_reference(torch_ref):
    # Trap 9: replicate pad k//2, per-sample depthwise conv with its own kernel, crop, [::4, ::4].
    rng = np.random.default_rng(91)
    x = randn(rng, 2, 3, 21, 26)
    k = rng.random((2, 1, 13, 13)).astype(np.float32)
    k[1, 0, :, :6] *= 3  # different, asymmetric kernels per sample
    k /= k.sum(axis=(2, 3), keepdims=True)
    w = randn(rng, 2, 3, 6, 7)
    ref = torch_ref('ref_blur_down', x=x, kernel=k, w=w, scale=np.array(4))
    jx, jk = jt.array(x), jt.array(k)
    out = blur_down(jx, jk, 4)
    gx, gk = jgrads(out, w, [jx, jk])
    close(out.numpy(), ref['out'], what='output')
    close(gx, ref['gx'], what='grad x')
    close(gk, ref['gk'], tol=1e-4, what='grad kernel')


# -- trap 10: the training branch ------------------------------------------------------
def test_train_cycle_loss_trains_only_kernel_net():
    # Trap 10: the HR reconstruction is a no-grad target; the cycle loss reaches KernelNet only.
    jt.set_global_seed(10)
    model = PWC_Recons(**SMALL)
    model.train()
    x = jt.array(np.random.default_rng(101).random((1, 5, 3, 16, 24), np.float32))
    out, _ = model({'x': x, 'mode': 'train'})
    assert out['input_cycle'].shape == out['input'].shape == out['recons_down'].shape
    recons_parts = ['in_conv', 'extra_feat', 'fusion_conv', 'recons_net', 'upsample_layers', 'out_conv']
    recons_params = [p for name in recons_parts for p in getattr(model, name).parameters()]
    kernel_params = model.kernel_net.parameters()
    flow_params = model.flow_net.parameters()
    cycle = (out['input_cycle'] - out['input']).abs().mean()
    grads = jt.grad(cycle, recons_params + kernel_params + flow_params)
    grads = [g.numpy() for g in grads]
    nr, nk = len(recons_params), len(kernel_params)
    assert all(np.all(g == 0) for g in grads[:nr]), 'cycle loss reaches the reconstruction branch'
    assert all(np.all(g == 0) for g in grads[nr + nk:]), 'cycle loss reaches the flow net'
    assert sum(np.abs(g).sum() for g in grads[nr:nr + nk]) > 0, 'cycle loss does not train KernelNet'
    down = (out['recons_down'] - out['input']).abs().mean()
    g_down = [g.numpy() for g in jt.grad(down, model.recons_net.parameters())]
    assert all(np.abs(g).sum() > 0 for g in g_down), 'recons_down loss does not reach recons_net'
