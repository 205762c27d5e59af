"""ComposedTail: the upsampling + output convs as one LR conv, edges from the layers."""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401  (configures Jittor)
import jittor as jt
from jittor import nn

from jittor_sbvsr.inference import VideoSR
from jittor_sbvsr.models import PWC_Recons
from jittor_sbvsr.models.composed_tail import ComposedTail, _conv64, _shuffle64


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
    tail = ComposedTail(up, out)
    x = jt.randn(2, c, h, w)
    with jt.no_grad():
        ref = _layered(up, out)(x).numpy()
        got = tail(x, _layered(up, out)).numpy()
    assert got.shape == ref.shape == (2, 3, h << n_up, w << n_up)
    assert tail._fits(h) and tail._fits(w)  # the composed path ran, not the fallback
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
    tail = ComposedTail(up, out)
    assert (tail.m, tail.e, tail.t) == (2, [1, 1], [3, 3])
    # one LR row fewer than the strips: the layers do it all, bit for bit
    x = jt.randn(1, 8, 2, 9)
    with jt.no_grad():
        assert np.array_equal(tail(x, _layered(up, out)).numpy(), _layered(up, out)(x).numpy())


def test_the_edge_band_is_needed():
    """Without the strips the composed map is wrong at the edge: the band is not a no-op."""
    up, out = _layers(8, 2)
    tail = ComposedTail(up, out)
    x = jt.randn(1, 8, 10, 10)
    with jt.no_grad():
        whole = nn.PixelShuffle(4)(nn.conv2d(x, tail.weight, tail.bias, 1, tail.m)).numpy()
        ref = _layered(up, out)(x).numpy()
    d = np.abs(whole - ref)
    assert d[..., 4:-4, 4:-4].max() <= 1e-5
    assert d[..., :4, :].max() > 1e-3 and d[..., -4:, :].max() > 1e-3


def test_model_uses_it_only_without_gradients():
    jt.set_global_seed(3)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    feat = jt.randn(1, 16, 8, 8)
    net.composed_tail = ComposedTail.of(net)
    try:
        with jt.no_grad():
            composed = net.tail(feat).numpy()
        out = net.tail(feat)  # gradients recorded: the layers
        grads = jt.grad(out.sum(), list(net.upsample_layers.parameters()))
        assert all(np.abs(g.numpy()).sum() > 0 for g in grads)
    finally:
        net.composed_tail = None
    with jt.no_grad():
        layered = net.tail(feat).numpy()
    assert np.array_equal(out.numpy(), layered)
    assert not np.array_equal(composed, layered) and np.abs(composed - layered).max() <= 1e-5


def test_engine_composes_per_net_and_leaves_the_net_plain():
    jt.set_global_seed(4)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(5)]
    windows = [list(range(5))]
    engine = VideoSR(net)
    a = next(engine.windows(frames, windows))[1]
    assert net.composed_tail is None  # reset after each window
    b = next(VideoSR(net, compose=False).windows(frames, windows))[1]
    assert np.abs(a - b).max() <= 1e-5 and not np.array_equal(a, b)
    # new weights: a new engine composes them; the old one is for the old net only
    net2 = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    engine.net = net2
    c = next(engine.windows(frames, windows))[1]
    d = next(VideoSR(net2, compose=False).windows(frames, windows))[1]
    assert np.abs(c - d).max() <= 1e-5 and np.abs(c - a).max() > 1e-3


def test_engine_unsets_the_tail_when_a_window_fails(monkeypatch):
    jt.set_global_seed(5)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    frames = [np.zeros((12, 16, 3), np.uint8)] * 5

    def broken(x):
        raise RuntimeError('boom')

    monkeypatch.setattr(net, 'kernel_net', broken)
    with pytest.raises(RuntimeError, match='boom'):
        next(VideoSR(net).windows(frames, [list(range(5))]))
    assert net.composed_tail is None
