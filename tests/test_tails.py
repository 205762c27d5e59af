"""The tails (models/tails.py): ComposedTail is the upsampling + output convs as one LR conv,
its edges from a layered tail; every tail takes the weights as they are when it is built."""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401  (configures Jittor)
import jittor as jt
from jittor import nn

from jittor_sbvsr.models import PWC_Recons
from jittor_sbvsr.models.tails import ComposedTail, FusedTail, PlainTail, _conv64, _shuffle64, tail_layers
from jittor_sbvsr.ops import fused_conv


def _layers(c, n_up, k=3, seed=0):
    """(up convs, out convs) with random weights and non-zero biases."""
    jt.set_global_seed(seed)
    up = [nn.Conv2d(c, 4 * c, k, padding=k // 2) for _ in range(n_up)]
    out = [nn.Conv2d(c, c, k, padding=k // 2), nn.Conv2d(c, 3, k, padding=k // 2)]
    for m in up + out:
        m.bias.assign(jt.randn(m.bias.shape) * 0.1)
    return up, out


def _layered(up, out):
    def run(x):
        for conv in up:
            x = nn.PixelShuffle(2)(conv(x))
        for conv in out:
            x = conv(x)
        return x
    return run


def _float64(up, out, x):
    """The layers in float64 (zero padding per layer, as the model)."""
    x = x.astype(np.float64)
    for conv in up:
        x = _shuffle64(_conv64(x, conv.weight.numpy().astype(np.float64), conv.bias.numpy().astype(np.float64)))
    for conv in out:
        x = _conv64(x, conv.weight.numpy().astype(np.float64), conv.bias.numpy().astype(np.float64))
    return x


@pytest.mark.parametrize('c, n_up, k, h, w', [
    (16, 2, 3, 12, 17),   # the model's tail (x4), small
    (128, 2, 3, 9, 11),   # the published width
    (8, 1, 3, 7, 6),      # x2
    (8, 0, 3, 9, 10),     # HR_in: the output convs only
    (8, 1, 5, 13, 12),    # 5x5 kernels: wider edge strips
])
def test_composed_equals_the_layers(c, n_up, k, h, w):
    up, out = _layers(c, n_up, k)
    tail = ComposedTail(up, out, _layered(up, out))
    x = jt.randn(2, c, h, w)
    with jt.no_grad():
        ref = _layered(up, out)(x).numpy()
        got = tail(x).numpy()
    assert got.shape == ref.shape == (2, 3, h << n_up, w << n_up)
    assert tail.fits(h) and tail.fits(w)  # the composed path ran, not the fallback
    s, (e0, e1) = tail.s, tail.e
    interior = (Ellipsis, slice(s * e0, s * (h - e1)), slice(s * e0, s * (w - e1)))
    edge = np.ones(ref.shape, bool)
    edge[interior] = False
    # the edge bands are the layers' own outputs (computed on strips)
    assert np.abs(got - ref)[edge].max() <= 1e-6
    # the interior is the same affine map, summed in another order: float32 rounding only.
    # Against float64, the composition is no less accurate than the layers.
    truth = _float64(up, out, x.numpy())
    err_got, err_ref = np.abs(got - truth)[interior], np.abs(ref - truth)[interior]
    assert np.sqrt((err_got ** 2).mean()) <= 1.25 * np.sqrt((err_ref ** 2).mean())
    assert err_got.max() <= 4 * err_ref.max()
    assert truth[interior].std() > 0.05  # not a near-constant map


def test_edge_band_and_strips_of_the_model_tail():
    up, out = _layers(8, 2)
    tail = ComposedTail(up, out, _layered(up, out))
    assert (tail.m, tail.e, tail.t) == (2, [1, 1], [3, 3])
    # one LR row fewer than the strips: the layers do it all, bit for bit
    x = jt.randn(1, 8, 2, 9)
    with jt.no_grad():
        assert np.array_equal(tail(x).numpy(), _layered(up, out)(x).numpy())


def test_the_edge_band_is_needed():
    """Without the strips the composed map is wrong at the edge: the band is not a no-op."""
    up, out = _layers(8, 2)
    tail = ComposedTail(up, out, _layered(up, out))
    x = jt.randn(1, 8, 10, 10)
    with jt.no_grad():
        whole = nn.PixelShuffle(4)(nn.conv2d(x, tail.weight, tail.bias, 1, tail.m)).numpy()
        ref = _layered(up, out)(x).numpy()
    d = np.abs(whole - ref)
    assert d[..., 4:-4, 4:-4].max() <= 1e-5
    assert d[..., :4, :].max() > 1e-3 and d[..., -4:, :].max() > 1e-3


@pytest.mark.parametrize('layout', list(fused_conv.LAYOUTS))
def test_composed_with_fused_edge_strips(layout):
    """The engine's CPU tail: composed interior, edge strips (1-3 px) from the fused layers."""
    if not fused_conv.available():
        pytest.skip('no oneDNN: the fused layers cannot run')
    up, out = _layers(16, 2)
    tail = ComposedTail(up, out, FusedTail(up, out, layout))
    for h, w in [(12, 17), (3, 9), (5, 4)]:
        x = jt.randn(1, 16, h, w)
        with jt.no_grad():
            ref = _layered(up, out)(x).numpy()
            got = tail(x).numpy()
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), (h, w)


def test_every_tail_is_a_snapshot_of_the_weights():
    jt.set_global_seed(3)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    feat = jt.randn(1, 16, 8, 8)
    up, out = tail_layers(net)
    tails = [ComposedTail(up, out, PlainTail(net))]
    if fused_conv.available():
        tails.append(FusedTail(up, out))
    with jt.no_grad():
        ref = net.tail(feat).numpy()
        out[0].bias.assign(out[0].bias + 1)  # weights change after the tails were built
        assert np.abs(net.tail(feat).numpy() - ref).max() > 0.1
        for t in tails[1:]:
            assert np.abs(t(feat).numpy() - ref).max() <= 1e-5
    # the composed one's interior is its own snapshot; its edges come from the (live) layers given
    interior = np.s_[..., 4:-4, 4:-4]
    with jt.no_grad():
        assert np.abs(tails[0](feat).numpy()[interior] - ref[interior]).max() <= 1e-5


def test_plain_tail_records_gradients():
    jt.set_global_seed(3)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    out = PlainTail(net)(jt.randn(1, 16, 6, 6))
    grads = jt.grad(out.sum(), list(net.upsample_layers.parameters()))
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)
