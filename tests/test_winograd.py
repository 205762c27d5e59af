"""Our Winograd 3x3 convolutions (ops/winograd.py) in the fused chains: exact transforms, the same
output as Jittor's layers in every layout and with each head, rounding at direct's level against float64.

On a CPU without AVX2/FMA (or a build without the intrinsics) the chains must stay direct.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.models import fused_weights
from jittor_sbvsr.models.deploy import FusedChain, InferenceNet, flow_graphs
from jittor_sbvsr.ops import fused_conv, winograd

import jittor as jt
from jittor import nn

from test_fused_conv import _blocks, _close, _conv64, _head

FUSED = fused_conv.available()
OURS = FUSED and fused_conv.winograd_available()


@pytest.mark.parametrize('m', sorted(winograd.MATRICES))
def test_transforms_are_exact_in_float64(m):
    """A^T [(G g) * (B^T d)] is the correlation of d with g, for each tile, in 1-D and 2-D."""
    bt, g, at = winograd.MATRICES[m]
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
    ref = np.array([[(d[i:i + 3, j:j + 3] * k).sum() for j in range(m)] for i in range(m)])
    got = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    assert np.abs(got - ref).max() < 1e-12
    u = winograd.transform_weights(k[None, None], m)  # [P, Ci, Co]
    assert u.shape == ((m + 2) ** 2, 1, 1) and np.allclose(u[:, 0, 0], (g @ k @ g.T).ravel(), atol=1e-7)


def test_available_on_this_cpu():
    if not FUSED or not os.path.exists('/proc/cpuinfo'):
        pytest.skip('no oneDNN, or no /proc/cpuinfo to read the CPU flags from')
    with open('/proc/cpuinfo', encoding='utf-8') as fh:
        flags = fh.read()
    assert fused_conv.winograd_available() == (' avx2' in flags and ' fma' in flags)


# shapes with partial tiles on each side, 1-3 pixel strips, widths that are not 8k (direct then), 16-channel blocks
SHAPES = [(2, 16, 11, 13, 2), (1, 12, 7, 9, 1), (1, 32, 1, 3, 1), (1, 8, 3, 1, 1), (1, 128, 6, 10, 1)]


@pytest.mark.parametrize('algorithm, layout', [('wino4', lay) for lay in fused_conv.LAYOUTS] + [('wino2', 'auto')])
@pytest.mark.parametrize('head', ['none', 'in_conv', 'fusion_conv'])
@pytest.mark.parametrize('n, c, h, w, nb', SHAPES)
def test_chain_matches_plain(algorithm, head, layout, n, c, h, w, nb):
    if not OURS:
        pytest.skip('no AVX2/FMA: our Winograd is never used')
    if layout == 'nChw16c' and c % 16:
        c = 16
    blocks = _blocks(c, nb)
    conv = {'none': [], 'in_conv': [_head(3, c)], 'fusion_conv': [_head(5 * c, c)]}[head]
    x = jt.randn(n, conv[0].weight.shape[1] if conv else c, h, w)
    expect = algorithm if c % 8 == 0 else 'direct'
    assert fused_conv.chain_algorithm((n, c, h, w), layout, algorithm) == expect
    with jt.no_grad():
        ref = nn.Sequential(*conv, *blocks)(x).numpy()
        got = FusedChain(blocks, layout, algorithm, *conv)(x).numpy()
    assert got.shape == ref.shape
    assert _close(ref, got), np.abs(ref - got).max()


@pytest.mark.parametrize('algorithm, rms_max, max_max', [('wino4', 2.2, 2.5), ('wino2', 1, 1)])
def test_rounds_like_float32(algorithm, rms_max, max_max):
    """Error against float64 at direct's level, three 128-channel ResBlocks after a fusion conv (640 -> 128);
    where oneDNN has a Winograd kernel (AVX-512), no more than 1.5x its error.

    Measured on a 2-core AMD EPYC (Zen 4), RMS / max relative to oneDNN's direct convolution in the
    layout it picks: F(4x4,3x3) 1.02x / 0.82x with AVX2 (direct: nChw8c, RMS 3.7e-7 of the peak, 8.1),
    1.84x / 1.96x with AVX-512 (direct: NHWC brgemm, RMS 2.3e-7 of the peak), where oneDNN's own
    F(4x4,3x3) has 1.43x / 1.38x (ours 1.29x / 1.42x its error); F(2x2,3x3) 0.37x / 0.24x (AVX2),
    0.66x / 0.62x (AVX-512).
    """
    if not OURS:
        pytest.skip('no AVX2/FMA')
    blocks, conv = _blocks(128, 3, seed=7), _head(640, 128)
    w_, b_ = fused_weights.chain_weights(blocks)
    for i in range(len(w_)):  # ResNet-like scales: the activations stay O(1) through the chain
        w_[i] *= 0.5 / np.sqrt(128 * 9) / np.abs(w_[i]).std()
    hw, hb = fused_weights.head_weights(conv, w_)
    hw = hw * (1 / np.sqrt(640 * 9) / hw.std())
    x = np.random.RandomState(1).standard_normal((1, 640, 18, 23)).astype(np.float32)
    ref = _conv64(x[0].astype(np.float64), hw.astype(np.float64), hb.astype(np.float64))
    for i in range(0, len(w_), 2):
        t = np.maximum(_conv64(ref, w_[i].astype(np.float64), b_[i].astype(np.float64)), 0)
        ref = ref + _conv64(t, w_[i + 1].astype(np.float64), b_[i + 1].astype(np.float64))
    xv = jt.array(x)
    run = lambda a: fused_conv.resblock_chain(xv, w_, b_, 'auto', a, (hw, hb)).numpy()[0]  # noqa: E731
    direct, ours = run('direct'), run(algorithm)
    assert not np.array_equal(ours, direct)  # it is another algorithm
    err_d, err_w = direct - ref, ours - ref
    rms = lambda e: np.sqrt((e ** 2).mean())  # noqa: E731
    assert rms(err_d) < 1e-6 * np.abs(ref).max()
    assert rms(err_w) <= rms_max * rms(err_d), (rms(err_w), rms(err_d))
    assert np.abs(err_w).max() <= max_max * np.abs(err_d).max(), (np.abs(err_w).max(), np.abs(err_d).max())
    if fused_conv.chain_algorithm((1, 128, 18, 23), 'auto', 'auto', (640, 3)) == 'winograd':
        err_o = run('auto') - ref
        assert rms(err_w) <= 1.5 * rms(err_o) and np.abs(err_w).max() <= 1.5 * np.abs(err_o).max()


def test_without_avx2_the_chains_stay_direct(monkeypatch):
    """A CPU (or build) without AVX2/FMA: no Winograd where oneDNN has none either, one line in the paths."""
    if not FUSED:
        return
    monkeypatch.setattr(fused_conv, 'winograd_available', lambda: False)
    assert fused_conv.chain_algorithm((1, 16, 16, 20), 'auto', 'wino4') == 'direct'
    jt.set_global_seed(4)
    from jittor_sbvsr.models import PWC_Recons
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2)
    net.eval()
    model = InferenceNet(net, warn=pytest.fail)
    if fused_conv.chain_algorithm((1, 16, 16, 20), 'auto', 'auto') != 'winograd':
        assert model.paths['winograd'].startswith('not available') and model.trunk.algorithm == 'direct'
    else:  # AVX-512: oneDNN's
        assert model.paths['winograd'].startswith("on (oneDNN's") and model.trunk.algorithm == 'auto'


def test_where_both_run_ours_is_taken_untimed(monkeypatch):
    """On AVX-512 both ours and oneDNN's Winograd run: ours, with no timing that could pick the
    other on another run (a resumed run must give the same bits)."""
    if not OURS:
        pytest.skip('no AVX2/FMA')
    real = fused_conv.chain_algorithm
    monkeypatch.setattr(fused_conv, 'chain_algorithm', lambda shape, layout='auto', algorithm='auto', head=None:
                        'winograd' if algorithm == 'auto' and head is None else real(shape, layout, algorithm, head))
    jt.set_global_seed(4)
    from jittor_sbvsr.models import PWC_Recons
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2)
    net.eval()
    model = InferenceNet(net, warn=pytest.fail)
    assert model.paths['winograd'] == 'on (ours, F(4x4,3x3); direct for in_conv)', model.paths
    assert model.trunk.algorithm == model.frame_features.algorithm == 'wino4'


def test_an_isa_cap_below_avx2_stands_for_a_cpu_without():
    """DNNL_MAX_CPU_ISA=AVX (a CPU without AVX2, as oneDNN sees it): our kernels are not used."""
    if not OURS:
        pytest.skip('no AVX2/FMA here anyway')
    code = 'import jittor_sbvsr; from jittor_sbvsr.ops import fused_conv; print("OURS", fused_conv.winograd_available())'
    env = dict(os.environ, DNNL_MAX_CPU_ISA='AVX')
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=600,
                       encoding='utf-8', cwd=str(ROOT))
    assert r.returncode == 0 and 'OURS False' in r.stdout, r.stderr[-2000:]


def _pwc():
    jt.set_global_seed(3)
    from jittor_sbvsr.models.flow_pwc import Network
    return Network()


def _lrelu64(x):
    return np.where(x > 0, x, 0.1 * x)


def _pwc64(pwc, name, x):
    """The float64 evaluation of a decoder's dense layers (concatenated [flow, feat]) or of the refiner."""
    if name == 'moduleRefiner':
        convs = [m for m in pwc.moduleRefiner.moduleMain if isinstance(m, nn.Conv)]
        for i, c in enumerate(convs):
            x = _conv64(x, c.weight.numpy().astype(np.float64), c.bias.numpy().astype(np.float64), c.dilation[0])
            x = _lrelu64(x) if i < len(convs) - 1 else x
        return x
    dec = getattr(pwc, name)
    for m in dec.LAYERS:
        c = getattr(dec, m)[0]
        x = np.concatenate([_lrelu64(_conv64(x, c.weight.numpy().astype(np.float64),
                                             c.bias.numpy().astype(np.float64))), x])
    c = dec.moduleSix[0]
    return np.concatenate([_conv64(x, c.weight.numpy().astype(np.float64), c.bias.numpy().astype(np.float64)), x])


@pytest.mark.parametrize('name, hw', [('moduleSix', (3, 5)), ('moduleTwo', (13, 22)), ('moduleRefiner', (36, 41))])
def test_pwc_decoders_round_like_float32(name, hw):
    """PWC-Net's decoders (dense layers and flow conv; 81 to 565 channels, zero-padded to 8k) and
    refiner (dilations 1 to 16 as phase sub-images) as ConvGraphs (models/deploy.py:flow_graphs):
    error against float64 at the level of Jittor's direct convolutions, as the chains' (2.2x / 2.5x)."""
    if not OURS:
        pytest.skip('no AVX2/FMA')
    pwc = _pwc()
    graph = flow_graphs(pwc)[name]
    plain = pwc.moduleRefiner if name == 'moduleRefiner' else getattr(pwc, name).dense
    c = (pwc.moduleRefiner.moduleMain[0] if name == 'moduleRefiner' else getattr(pwc, name).moduleOne[0]).in_channels
    x = np.random.RandomState(2).standard_normal((1, c) + hw).astype(np.float32)
    both = (lambda y: y) if name == 'moduleRefiner' else (lambda d: jt.concat([d['flow'], d['feat']], 1))
    with jt.no_grad():
        ours, direct = both(graph(jt.array(x))).numpy()[0], both(plain(jt.array(x))).numpy()[0]
    ref = _pwc64(pwc, name, x[0].astype(np.float64))
    assert ours.shape == direct.shape == ref.shape
    err_d, err_w = direct - ref, ours - ref
    rms = lambda e: np.sqrt((e ** 2).mean())  # noqa: E731
    assert rms(err_d) < 1e-6 * np.abs(ref).max()
    assert rms(err_w) <= 2.2 * rms(err_d), (rms(err_w), rms(err_d))
    assert np.abs(err_w).max() <= 2.5 * np.abs(err_d).max(), (np.abs(err_w).max(), np.abs(err_d).max())


def test_conv_graph_refuses_what_does_not_fit():
    w, b = np.zeros((8, 20, 3, 3)), np.zeros(8)
    with pytest.raises(ValueError, match='does not fit'):
        fused_conv.ConvGraph([16, 8], (0, 0), [(w, b, (0, 0), (1, 0), 1, True)], [(1, 8)])  # 24 channels from 16
    with pytest.raises(ValueError, match='groups of 8'):
        fused_conv.ConvGraph([20, 8], (0, 0), [], [(1, 8)])
    graph = fused_conv.ConvGraph([16, 8], (0, 8), [(w[:, :16], b, (0, 0), (1, 0), 1, True)], [(1, 8)])
    with pytest.raises(ValueError, match='does not fit its buffer'):  # 12 channels from offset 8 of 16
        graph(jt.zeros((1, 12, 4, 5)))
    if OURS:
        assert graph(jt.zeros((1, 8, 4, 5)))[0].shape == (1, 8, 4, 5)
