"""Fused oneDNN ResBlock chains (with and without a conv before them) and tail: the same output as
Jittor's own ops, in every layout.

Every test runs with each activation layout forced (8- and 16-channel
blocks, NHWC) and with oneDNN's own choice, whatever this CPU is: oneDNN
runs a forced layout on any ISA (with a reference kernel where it has no
fast one), so one machine covers what AVX2 and AVX-512 CPUs pick.
tests/test_isa.py runs them again under each DNNL_MAX_CPU_ISA level.
oneDNN is part of the install (env/setup.sh); without it the fused ops
must refuse to run.
"""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr import runtime
from jittor_sbvsr.models import fused_weights
from jittor_sbvsr.models.deploy import FusedChain
from jittor_sbvsr.models.pwc_recons import ResBlock
from jittor_sbvsr.models.tails import FusedTail
from jittor_sbvsr.ops import fused_conv

import jittor as jt
from jittor import nn

FUSED = fused_conv.available()
LAYOUTS = list(fused_conv.LAYOUTS)


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
    if runtime.onednn_installed():  # the install gives it; CI must not silently test the plain path only
        assert FUSED


def test_onednn_reports_its_isa():
    if not FUSED:
        pytest.skip('no oneDNN')
    assert fused_conv.onednn_isa() in fused_conv.ISA_NAMES.values()


# shapes the engine makes: odd sides, 1-3 pixel strips, 1-pixel-tall tiles, demo widths 16/32,
# widths that are not whole 8- or 16-channel blocks, the published 128
CHAIN_SHAPES = [(2, 16, 11, 13, 3), (1, 12, 7, 9, 2), (1, 32, 1, 3, 2), (1, 16, 3, 1, 1), (1, 128, 6, 10, 2)]


def _head(cin, c, k=3):
    jt.set_global_seed(100)
    conv = nn.Conv2d(cin, c, k, padding=k // 2)
    conv.bias.assign(jt.randn(c) * 0.1)  # non-zero, so that a dropped bias shows
    return conv


# the conv before a chain: none, in_conv (3 channels), fusion_conv (5 frames' features: 60, 80, ..., 640)
HEADS = {'none': None, 'in_conv': lambda c: 3, 'fusion_conv': lambda c: 5 * c}


@pytest.mark.parametrize('algorithm', ['direct', 'auto'])
@pytest.mark.parametrize('head', list(HEADS))
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('n, c, h, w, nb', CHAIN_SHAPES)
def test_chain_matches_plain(algorithm, head, layout, n, c, h, w, nb):
    blocks = _blocks(c, nb)
    conv = [] if HEADS[head] is None else [_head(HEADS[head](c), c)]
    x = jt.randn(n, conv[0].weight.shape[1] if conv else c, h, w)
    with jt.no_grad():
        ref = nn.Sequential(*conv, *blocks)(x).numpy()
        if not FUSED:
            with pytest.raises(RuntimeError, match='oneDNN'):
                FusedChain(blocks, layout, algorithm, *conv)(x)
            return
        got = FusedChain(blocks, layout, algorithm, *conv)(x).numpy()
    assert got.shape == ref.shape
    assert _close(ref, got), np.abs(ref - got).max()


def _conv64(x, w, b, d=1):
    """A 3x3 'same' convolution in float64 (x [C,H,W], w [O,C,3,3]), dilation d."""
    c, h, wd = x.shape
    p = np.pad(x, ((0, 0), (d, d), (d, d)))
    cols = np.stack([p[:, i * d:i * d + h, j * d:j * d + wd] for i in range(3) for j in range(3)], 1)
    return np.einsum('ckhw,ock->ohw', cols, w.reshape(w.shape[0], c, 9)) + b[:, None, None]


WINOGRAD = FUSED and fused_conv.chain_algorithm((1, 128, 16, 20), 'auto', 'auto') == 'winograd'
needs_fused = pytest.mark.skipif(not FUSED, reason='no oneDNN fused ops here (env/setup.sh installs oneDNN)')


@needs_fused
@pytest.mark.parametrize('h, w', [(9, 13), (24, 40)], ids=['wino2x3', 'wino4x3'])
def test_winograd_rounds_like_float32(h, w):
    """Winograd's error against float64 stays at direct's level: RMS <= 2.5x, max <= 4x direct's.

    Measured on an AVX-512 Xeon: 0.64x / 0.60x (F(2x2,3x3), 9x13) and
    1.79x / 1.80x (F(4x4,3x3), 24x40); direct's RMS is 1.1e-6 of a peak of 7.5.

    Where this oneDNN has no Winograd kernel (CPUs without AVX-512) 'auto'
    must give the direct convolutions' result exactly, and 'winograd' refuse.
    """
    blocks = _blocks(128, 3, seed=7)
    w_, b_ = fused_weights.chain_weights(blocks)
    for i in range(len(w_)):  # ResNet-like scales: the activations stay O(1) through the chain
        w_[i] *= 0.5 / np.sqrt(128 * 9) / np.abs(w_[i]).std()
    x = np.random.RandomState(1).standard_normal((1, 128, h, w)).astype(np.float32)
    ref = x[0].astype(np.float64)
    for i in range(0, len(w_), 2):
        t = np.maximum(_conv64(ref, w_[i].astype(np.float64), b_[i].astype(np.float64)), 0)
        ref = ref + _conv64(t, w_[i + 1].astype(np.float64), b_[i + 1].astype(np.float64))
    xv = jt.array(x)
    direct = fused_conv.resblock_chain(xv, w_, b_, 'auto', 'direct').numpy()[0]
    auto = fused_conv.resblock_chain(xv, w_, b_, 'auto', 'auto').numpy()[0]
    if not WINOGRAD:
        assert fused_conv.chain_algorithm((1, 128, h, w), 'auto', 'auto') == 'direct'
        assert np.array_equal(auto, direct)
        with pytest.raises(RuntimeError):
            fused_conv.resblock_chain(xv, w_, b_, 'auto', 'winograd').sync()
        return
    assert fused_conv.chain_algorithm((1, 128, h, w), 'auto', 'auto') == 'winograd'
    assert not np.array_equal(auto, direct)  # it is another algorithm
    err_d, err_w = direct - ref, auto - ref
    rms = lambda e: np.sqrt((e ** 2).mean())  # noqa: E731
    assert rms(err_d) < 1e-6 * np.abs(ref).max()
    assert rms(err_w) <= 2.5 * rms(err_d), (rms(err_w), rms(err_d))
    assert np.abs(err_w).max() <= 4 * np.abs(err_d).max(), (np.abs(err_w).max(), np.abs(err_d).max())


@needs_fused
def test_winograd_falls_back_where_the_layout_has_no_kernel():
    blocks = _blocks(16, 1)
    x = jt.randn(1, 16, 16, 20)
    with jt.no_grad():
        ref = nn.Sequential(*blocks)(x).numpy()
        got = FusedChain(blocks, 'nhwc', 'auto')(x).numpy()  # oneDNN 2.2's Winograd: blocked layouts only
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'nhwc', 'auto') == 'direct'
    assert _close(ref, got)


@needs_fused
def test_head_falls_back_to_direct_alone():
    """With 'auto' a head oneDNN has no Winograd kernel for (5x5) runs direct, the blocks still Winograd;
    so does one of under 16 input channels (in_conv's 3), where Winograd's padding to 16 costs more."""
    wino = 'winograd' if WINOGRAD else 'direct'
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'nChw16c', 'auto', head=(3, 3)) == 'direct'
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'nChw16c', 'auto', head=(60, 3)) == wino
    blocks, head = _blocks(16, 2), _head(60, 16, k=5)
    x = jt.randn(1, 60, 16, 20)
    with jt.no_grad():
        ref = nn.Sequential(head, *blocks)(x).numpy()
        got = FusedChain(blocks, 'nChw16c', 'auto', head)(x).numpy()
    assert _close(ref, got)
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'nChw16c', 'auto', head=(60, 5)) == 'direct'
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'nChw16c', 'auto') == wino
    with pytest.raises(RuntimeError):  # forced Winograd: refused for that conv
        FusedChain(blocks, 'nChw16c', 'winograd', head)(x).sync()


@needs_fused
def test_many_shapes_and_weights():
    # more shapes than the primitive cache holds, and new weights on a cached shape
    for i, (h, w) in enumerate([(5, 6), (6, 5), (8, 8), (3, 4), (9, 2), (5, 6)]):
        blocks = _blocks(8, 2, seed=i)
        x = jt.randn(1, 8, h, w)
        with jt.no_grad():
            ref = nn.Sequential(*blocks)(x).numpy()
            got = FusedChain(blocks, 'nChw16c' if i % 2 else 'auto')(x)
        assert _close(ref, got.numpy())


@needs_fused
def test_chain_snapshots_its_weights():
    blocks = _blocks(8, 1)
    x = jt.randn(1, 8, 5, 6)
    with jt.no_grad():
        ref = nn.Sequential(*blocks)(x).numpy()
        chain = FusedChain(blocks)
        blocks[0].conv1.weight.assign(blocks[0].conv1.weight * 2)
        assert _close(ref, chain(x).numpy())


def test_rejects_other_blocks():
    with pytest.raises(ValueError):
        fused_weights.chain_weights([ResBlock(8, 16)])
    with pytest.raises(ValueError):
        fused_weights.chain_weights([ResBlock(8, 8), ResBlock(16, 16)])
    if FUSED:
        with pytest.raises(ValueError):
            FusedChain([ResBlock(8, 8)])(jt.randn(1, 4, 4, 4))
        with pytest.raises(ValueError, match='layout'):
            FusedChain([ResBlock(8, 8)], 'nchw')(jt.randn(1, 8, 4, 4))
    w, _ = fused_weights.chain_weights([ResBlock(8, 8)])
    for head in (nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1, stride=2),
                 nn.Conv2d(3, 8, 3, padding=0), nn.Conv2d(3, 8, 3, padding=1, bias=False)):
        with pytest.raises(ValueError):
            fused_weights.head_weights(head, w)
    if FUSED:
        with pytest.raises(ValueError):  # an input that is not the head's
            FusedChain([ResBlock(8, 8)], head=nn.Conv2d(3, 8, 3, padding=1))(jt.randn(1, 8, 4, 4))


def _tail_layers(c, s, seed=0):
    jt.set_global_seed(seed)
    up = [nn.Conv2d(c, 4 * c, 3, padding=1) for _ in range(s)]
    out = [nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 3, 3, padding=1)]
    for m in up + out:
        m.bias.assign(jt.randn(m.bias.shape) * 0.1)
    return up, out


def _plain_tail(up, out, x):
    for conv in up:
        x = nn.PixelShuffle(2)(conv(x))
    for conv in out:
        x = conv(x)
    return x


TAIL_SHAPES = [(1, 16, 7, 9, 2), (2, 32, 5, 4, 1), (1, 16, 3, 1, 2), (1, 12, 5, 6, 2), (1, 32, 1, 2, 2),
               (1, 128, 3, 5, 2)]


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('n, c, h, w, s', TAIL_SHAPES)
def test_tail_matches_plain(layout, n, c, h, w, s):
    up, out = _tail_layers(c, s)
    x = jt.randn(n, c, h, w)
    assert FusedTail.fits(up, out)
    with jt.no_grad():
        ref = _plain_tail(up, out, x).numpy()
        if not FUSED:
            with pytest.raises(RuntimeError, match='oneDNN'):
                FusedTail(up, out, layout)(x)
            return
        got = FusedTail(up, out, layout)(x).numpy()
    assert got.shape == ref.shape == (n, 3, h << s, w << s)
    assert _close(ref, got), np.abs(ref - got).max()


def test_tail_fits_only_its_layers():
    up, out = _tail_layers(16, 1)
    assert FusedTail.fits(up, out)
    assert not FusedTail.fits([], out)  # no upsampling (HR_in): nothing to fuse
    assert not FusedTail.fits(up, out[:1])
    assert not FusedTail.fits([nn.Conv2d(16, 32, 3, padding=1)], out)
    assert not FusedTail.fits([nn.Conv2d(16, 64, 3, padding=1, stride=2)], out)
