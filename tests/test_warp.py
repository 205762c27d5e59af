"""The one-pass feature warp of inference (ops/warp.py) against the model's plain warp
(Flow_PWC.warp) and against a float64 evaluation of the same formula."""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401
import jittor as jt

from jittor_sbvsr.models.flow_pwc import Flow_PWC
from jittor_sbvsr.ops.warp import warp_features


@pytest.fixture(scope='module')
def flow_net():
    return Flow_PWC()


def _case(b, c, h, w, amp, seed, smooth=False):
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((b, c, h, w)).astype(np.float32)
    if smooth:  # features as convolutions make them: neighbours alike
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
        x = np.stack([np.sin(0.07 * (k + 1) * xx + 0.05 * yy + k) for k in range(c)])[None].repeat(b, 0)
        x = x.astype(np.float32)
    flow = (rng.standard_normal((b, 2, h, w)) * amp).astype(np.float32)
    return x, flow


def _plain(flow_net, x, flow):
    with jt.no_grad():
        return flow_net.warp(jt.array(x), jt.array(flow))[0].numpy()


def _float64(x, flow):
    """Flow_PWC.warp in float64: border-padded bilinear sample, zeroed where a ones image sampled
    with zero padding at the same place is below 0.999; also that mask value."""
    b, c, h, w = x.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing='ij')
    ux = (2 * (xx + flow[:, 0]) / max(w - 1, 1) - 1 + 1) * ((w - 1) / 2)
    uy = (2 * (yy + flow[:, 1]) / max(h - 1, 1) - 1 + 1) * ((h - 1) / 2)

    def taps(px, py):
        x0, y0 = np.floor(px), np.floor(py)
        return [(y0 + dy, x0 + dx, (1 - abs(py - y0 - dy)) * (1 - abs(px - x0 - dx)))
                for dy in (0, 1) for dx in (0, 1)]

    mask = sum(wt * ((ty >= 0) & (ty <= h - 1) & (tx >= 0) & (tx <= w - 1)) for ty, tx, wt in taps(ux, uy))
    out = np.zeros((b, c, h, w))
    for ty, tx, wt in taps(np.clip(ux, 0, w - 1), np.clip(uy, 0, h - 1)):
        ok = (ty <= h - 1) & (tx <= w - 1)
        iy, ix = np.where(ok, ty, 0).astype(int), np.where(ok, tx, 0).astype(int)
        for n in range(b):
            out[n] += np.where(ok[n], wt[n], 0) * x[n][:, iy[n], ix[n]]
    return out * (mask >= 0.999)[:, None], mask


@pytest.mark.parametrize('b, c, h, w, amp', [(1, 5, 9, 13, 3.0), (2, 3, 16, 20, 8.0), (1, 4, 7, 1, 2.0),
                                             (1, 8, 40, 64, 30.0)])
def test_same_as_the_plain_warp_to_rounding(flow_net, b, c, h, w, amp):
    """Shapes with samples inside, across the border and far outside (amp: the flow's spread, px)."""
    x, flow = _case(b, c, h, w, amp, seed=c)
    with jt.no_grad():
        got = warp_features(jt.array(x), jt.array(flow)).numpy()
    ref = _plain(flow_net, x, flow)
    assert got.shape == ref.shape
    assert np.array_equal(got == 0, ref == 0)  # the same pixels masked
    assert 0.02 < np.mean(ref == 0) < 0.98 or w == 1
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize('smooth', [False, True])
def test_as_close_to_float64_as_the_plain_warp(flow_net, smooth):
    """On a 180x320 frame float32 positions round differently in the two (up to ~1e-4 px at
    x ~ 300, from the operation order under -Ofast): each is compared with float64 where the
    mask is not within rounding of its 0.999 threshold; ours must be no worse than the plain."""
    x, flow = _case(1, 3, 180, 320, 4.0, seed=7, smooth=smooth)
    with jt.no_grad():
        got = warp_features(jt.array(x), jt.array(flow)).numpy()
    ref = _plain(flow_net, x, flow)
    exact, mask = _float64(x, flow)
    clear = np.broadcast_to((np.abs(mask - 0.999) > 1e-4)[:, None], exact.shape)
    ours, plain = np.abs(got - exact)[clear].max(), np.abs(ref - exact)[clear].max()
    assert ours <= 1.5 * plain + 1e-6, (ours, plain)
    assert ours <= (2e-4 if not smooth else 2e-5) * np.abs(exact).max()


def test_a_nan_flow_reads_in_bounds(flow_net):
    """NaN flows (a diverged flow net): no read outside the features, whatever the output."""
    x, flow = _case(1, 2, 6, 7, 2.0, seed=1)
    flow[0, :, 2, 3] = np.nan
    flow[0, 0, 5, 6] = np.inf
    with jt.no_grad():
        got = warp_features(jt.array(x), jt.array(flow)).numpy()
    ref = _plain(flow_net, x, flow)
    ok = np.isfinite(ref) & np.isfinite(got)
    assert ok[0, :, 0, 0].all() and np.abs(got - ref)[ok].max() <= 1e-5 * np.abs(ref).max()
