"""Fused oneDNN ResBlock chains: same output as the plain Jittor ops, used only without gradients.

oneDNN is part of the install (env/setup.sh); without it the fused path must
refuse to run and the model must fall back to the plain ops.
"""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr import runtime
from jittor_sbvsr.models import PWC_Recons
from jittor_sbvsr.models.pwc_recons import ResBlock
from jittor_sbvsr.ops import fused_conv

import jittor as jt
from jittor import nn

FUSED = fused_conv.available()


def _blocks(c, n, seed=0):
    jt.set_global_seed(seed)
    blocks = [ResBlock(c, c) for _ in range(n)]
    for b in blocks:  # non-zero biases, so that a dropped bias shows
        for conv in (b.conv1, b.conv2):
            conv.bias.assign(jt.randn(c) * 0.1)
    return blocks


def _close(ref, got):
    return np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_available_matches_runtime():
    assert FUSED == (runtime.onednn_enabled() and not jt.flags.use_cuda)


@pytest.mark.parametrize('n, c, h, w, nb', [(2, 16, 11, 13, 3), (1, 12, 7, 9, 2), (1, 128, 12, 20, 2)])
def test_chain_matches_plain(n, c, h, w, nb):
    blocks = _blocks(c, nb)
    x = jt.randn(n, c, h, w)
    with jt.no_grad():
        ref = nn.Sequential(*blocks)(x).numpy()
        if not FUSED:
            with pytest.raises(RuntimeError, match='oneDNN'):
                fused_conv.resblock_chain(x, blocks)
            return
        got = fused_conv.resblock_chain(x, blocks).numpy()
    assert got.shape == ref.shape
    assert _close(ref, got), np.abs(ref - got).max()


def test_many_shapes_and_weights():
    # more shapes than the primitive cache holds, and new weights on a cached shape
    for i, (h, w) in enumerate([(5, 6), (6, 5), (8, 8), (3, 4), (9, 2), (5, 6)]):
        blocks = _blocks(8, 2, seed=i)
        x = jt.randn(1, 8, h, w)
        with jt.no_grad():
            ref = nn.Sequential(*blocks)(x).numpy()
            got = (fused_conv.resblock_chain(x, blocks) if FUSED else nn.Sequential(*blocks)(x)).numpy()
        assert _close(ref, got)


def test_rejects_other_blocks():
    if not FUSED:
        return
    with pytest.raises(ValueError):
        fused_conv.resblock_chain(jt.randn(1, 8, 4, 4), [ResBlock(8, 16)])
    with pytest.raises(ValueError):
        fused_conv.resblock_chain(jt.randn(1, 4, 4, 4), [ResBlock(8, 8)])


def test_model_uses_fused_only_without_gradients():
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2)  # train mode: Jittor's eval() stops gradients
    x = jt.randn(1, 16, 10, 12)
    with jt.no_grad():
        ref = net.recons_net(x).numpy()
        net.fused_cpu = True
        got = net.resblocks(net.recons_net, x).numpy()
        net.fused_cpu = False
    assert _close(ref, got)
    # With gradients the plain ops run (whatever the flag), so the weights get them.
    net.fused_cpu = True
    out = net.resblocks(net.recons_net, x)
    grads = jt.grad(out.sum(), net.recons_net.parameters())
    net.fused_cpu = False
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)
    assert np.array_equal(out.numpy(), net.recons_net(x).numpy())


def _tail_layers(c, s, seed=0):
    jt.set_global_seed(seed)
    up = []
    for _ in range(s):
        up += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2)]
    out = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 3, 3, padding=1))
    for m in up + list(out):
        if isinstance(m, nn.Conv2d):
            m.bias.assign(jt.randn(m.bias.shape) * 0.1)
    return nn.Sequential(*up), out


@pytest.mark.parametrize('n, c, h, w, s', [(1, 16, 7, 9, 2), (2, 32, 5, 4, 1), (1, 128, 6, 10, 2)])
def test_tail_matches_plain(n, c, h, w, s):
    up, out = _tail_layers(c, s)
    convs = [m for m in up if isinstance(m, nn.Conv2d)]
    x = jt.randn(n, c, h, w)
    assert fused_conv.tail_fits(x, convs, out)
    with jt.no_grad():
        ref = out(up(x)).numpy()
        if not FUSED:
            with pytest.raises(RuntimeError, match='oneDNN'):
                fused_conv.upsample_tail(x, convs, out)
            return
        got = fused_conv.upsample_tail(x, convs, out).numpy()
    assert got.shape == ref.shape == (n, 3, h << s, w << s)
    assert _close(ref, got), np.abs(ref - got).max()


def test_tail_fits_only_its_layers():
    up, out = _tail_layers(12, 1)  # 12 channels: not whole oneDNN channel blocks
    assert not fused_conv.tail_fits(jt.randn(1, 12, 4, 4), [up[0]], out)
    up, out = _tail_layers(16, 1)
    assert not fused_conv.tail_fits(jt.randn(1, 16, 4, 4), [], out)
    assert not fused_conv.tail_fits(jt.randn(1, 16, 4, 4), [up[0]], [out[0]])


def test_model_forward_fused_matches_plain():
    jt.set_global_seed(1)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2)
    frames = [jt.rand(1, 3, 16, 24) for _ in range(5)]
    with jt.no_grad():
        ref = net.recons_forward(frames).numpy()
        net.fused_cpu = True
        got = net.recons_forward(frames).numpy()
        net.fused_cpu = False
    assert _close(ref, got), np.abs(ref - got).max()
