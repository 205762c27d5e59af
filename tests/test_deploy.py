"""Deploying a model for inference (models/deploy.py): fast paths built once and self-checked.

A fast path that raises or computes wrong numbers on this machine must be
switched off with one warning line, and the run must go on with the right
output; the training model must carry no inference state.
"""
import sys

import numpy as np
import pytest

from conftest import ROOT, run_child

import jittor_sbvsr  # noqa: F401
import jittor as jt

from jittor_sbvsr.infer.engine import VideoSR
from jittor_sbvsr.models import PWC_Recons
from jittor_sbvsr.models.deploy import FusedChain, InferenceNet
from jittor_sbvsr.models.tails import ComposedTail, FusedTail, PlainTail
from jittor_sbvsr.ops import fused_conv, warp

FUSED = fused_conv.available()


def _net(seed=4):
    jt.set_global_seed(seed)
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2)
    net.eval()
    return net


def _frames(n=5, size=(12, 16)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size + (3,), dtype=np.uint8) for _ in range(n)]


def _run(engine, frames):
    return next(engine.windows(frames, [list(range(5))]))[1]


def test_default_deploy_uses_every_fast_path_that_can_run():
    warnings = []
    model = InferenceNet(_net(), warn=warnings.append)
    assert warnings == []
    assert model.paths['composed tail'] == 'on' and isinstance(model.tail, ComposedTail)
    if FUSED:
        assert model.paths['fused chains'] == model.paths['fused tail'] == 'on'
        assert isinstance(model.tail.layered, FusedTail)
        onednn = fused_conv.chain_algorithm((1, 16, 16, 20), 'auto', 'auto') == 'winograd'
        ours = fused_conv.winograd_available()
        # in_conv's 3 channels: direct (ops/fused_conv.py)
        wino = model.trunk.algorithm
        assert wino == ('wino4' if ours else 'auto' if onednn else 'direct')  # ours where both run
        assert model.paths['winograd'].startswith('on (') and model.paths['winograd'].endswith('; direct for in_conv)') \
            if ours or onednn else model.paths['winograd'].startswith('not available')
        for op in (model.frame_features, model.trunk):  # each with its conv before the chain
            assert isinstance(op, FusedChain) and op.head is not None and op.algorithm == wino
    else:
        assert model.paths['fused chains'].startswith('not available')
    assert model.paths['fused warp'] == 'on' and model.align is warp.warp_features  # any CPU
    if FUSED and fused_conv.winograd_available():
        assert model.paths['winograd flow'] == 'on'
        assert set(model.flow_layers) == {*model.net.flow_net.moduleNetwork.DECODERS, 'moduleRefiner'}
    else:
        assert model.paths['winograd flow'].startswith('not available') and model.flow_layers == {}
    assert model.probe_seconds < 5  # well under a second once Jittor's kernels are compiled (bench)
    assert 'self-check' in model.describe()


def test_flags_force_the_plain_paths():
    model = InferenceNet(_net(), fused=False, compose=False, warn=pytest.fail)
    assert model.paths == {'fused chains': 'off (--no_fused)', 'fused tail': 'off (--no_fused)',
                           'winograd': 'off (no fused chains)', 'fused warp': 'off (--no_fused)',
                           'winograd flow': 'off (--no_fused)', 'composed tail': 'off (--no_compose)'}
    assert model.flow_layers == {}
    net = model.net
    assert model.trunk == net.trunk and model.frame_features == net.frame_features and model.align == net.align
    assert isinstance(model.tail, PlainTail)
    if FUSED:
        direct = InferenceNet(_net(), winograd=False, warn=pytest.fail)
        assert direct.paths['winograd'] == 'off (--no_winograd)' and direct.trunk.algorithm == 'direct'
        assert direct.paths['winograd flow'] == 'off (--no_winograd)' and direct.flow_layers == {}


def test_the_model_carries_no_inference_state():
    net = _net()
    before = dict(vars(net))
    out = _run(VideoSR(net), _frames())
    assert np.isfinite(out).all()
    assert vars(net).keys() == before.keys()
    assert all(vars(net)[k] is v for k, v in before.items())


def _boom(*args, **kwargs):
    raise RuntimeError('[f executor.cc:686] Execute fused operator failed.\n[Reason]: injected fault')


@pytest.mark.parametrize('module, target, name, flag', [
    (fused_conv, 'resblock_chain', 'fused oneDNN ResBlock chains', '--no_fused'),
    (fused_conv, 'upsample_tail', 'fused oneDNN tail', '--no_fused'),
    (warp, 'warp_features', 'one-pass feature warp', '--no_fused'),
    (fused_conv, 'ConvGraph', 'Winograd PWC-Net decoders', '--no_winograd'),
])
def test_a_failing_fused_op_falls_back_with_one_warning(monkeypatch, module, target, name, flag):
    if not FUSED and module is fused_conv:
        pytest.skip('no oneDNN: the fused path is never tried')
    if target == 'ConvGraph' and not fused_conv.winograd_available():
        pytest.skip('no AVX2/FMA: our Winograd is never tried')
    net, frames = _net(), _frames()
    ref = _run(VideoSR(net, fused=False), frames)
    monkeypatch.setattr(module, target, _boom)
    warnings = []
    engine = VideoSR(net, warn=warnings.append)
    assert len(warnings) == 1, warnings
    assert name in warnings[0] and 'injected fault' in warnings[0] and flag in warnings[0]
    assert warnings[0].startswith('warning: ') and '\n' not in warnings[0]
    got = _run(engine, frames)  # the run goes on, on the plain path: right numbers
    assert np.abs(got - ref).max() <= 1e-5
    assert engine.model.paths['composed tail'] == 'on'


def test_wrong_numbers_are_caught_too(monkeypatch):
    if not FUSED:
        pytest.skip('no oneDNN: the fused path is never tried')
    real = fused_conv.upsample_tail
    monkeypatch.setattr(fused_conv, 'upsample_tail', lambda *a, **k: real(*a, **k) * 1.001)
    warnings = []
    model = InferenceNet(_net(), warn=warnings.append)
    assert len(warnings) == 1 and 'differs from Jittor' in warnings[0]
    assert model.paths['fused tail'].startswith('failed its self-check')
    assert isinstance(model.tail, ComposedTail) and isinstance(model.tail.layered, PlainTail)


def test_wrong_winograd_numbers_fall_back_to_direct(monkeypatch):
    """Winograd chains that differ: one warning, and the chains stay fused with direct convolutions."""
    if not FUSED:
        pytest.skip('no oneDNN: the fused path is never tried')
    real = fused_conv.resblock_chain
    monkeypatch.setattr(fused_conv, 'chain_algorithm', lambda *a, **k: 'winograd')  # as on AVX-512
    monkeypatch.setattr(fused_conv, 'resblock_chain',
                        lambda x, w, b, layout, algorithm, head: real(x, w, b, layout, algorithm, head)
                        * (1.001 if algorithm != 'direct' else 1))
    warnings = []
    model = InferenceNet(_net(), warn=warnings.append)
    assert len(warnings) == 1 and 'Winograd' in warnings[0] and '--no_winograd' in warnings[0], warnings
    assert 'running direct convolutions instead' in warnings[0]
    assert model.paths['fused chains'] == 'on' and model.paths['winograd'].startswith('failed its self-check')
    assert isinstance(model.trunk, FusedChain) and model.trunk.algorithm == 'direct'


def test_a_failing_composed_tail_falls_back(monkeypatch):
    net, frames = _net(), _frames()
    ref = _run(VideoSR(net, compose=False), frames)
    monkeypatch.setattr(ComposedTail, '__call__', _boom)
    warnings = []
    engine = VideoSR(net, warn=warnings.append)
    assert len(warnings) == 1 and 'composed tail' in warnings[0] and '--no_compose' in warnings[0]
    assert not isinstance(engine.model.tail, ComposedTail)
    assert np.abs(_run(engine, frames) - ref).max() <= 1e-5


def test_cli_run_survives_a_broken_fast_path(tmp_path, recipe_pkl):
    """inference.py with a fused op that throws: exit 0, one warning line, right output, logged."""
    if not FUSED:
        pytest.skip('no oneDNN: the fused path is never tried')
    import imageio.v2 as imageio
    weights = recipe_pkl
    (tmp_path / 'lr' / 'v').mkdir(parents=True)
    for t, f in enumerate(_frames()):
        imageio.imwrite(tmp_path / 'lr' / 'v' / f'{t:03d}.png', f)
    outs = {}
    for mode in ('broken', 'plain'):
        args = ['--input_path', tmp_path / 'lr', '--model_path', weights, '--result_path', tmp_path / 'out',
                '--infer_flag', mode, '--device', 'cpu']
        if mode == 'plain':
            args.append('--no_fused')
        code = ('import sys; sys.path.insert(0, sys.argv[1]); import jittor_sbvsr\n'
                'from jittor_sbvsr.ops import fused_conv\n'
                'def boom(*a, **k): raise RuntimeError("[Reason]: injected fault")\n'
                f'if {mode == "broken"}: fused_conv.resblock_chain = boom\n'
                'from jittor_sbvsr.cli.infer import main; sys.exit(main(sys.argv[2:]))\n')
        r = run_child([sys.executable, '-c', code, str(ROOT), *map(str, args)], capture_output=True,
                      text=True, timeout=600, encoding='utf-8')
        assert r.returncode == 0, r.stderr[-2000:]
        assert 'Traceback' not in r.stderr
        warnings = [ln for ln in r.stderr.splitlines() if ln.startswith('warning:')]
        assert len(warnings) == (mode == 'broken'), r.stderr
        outs[mode] = imageio.imread(tmp_path / 'out' / f'infer_{mode}' / 'v' / '002.png')
        log = next((tmp_path / 'out' / f'infer_{mode}').glob('inference_log_*.txt')).read_text(encoding='utf-8')
        assert 'engine: fast paths:' in log
        if mode == 'broken':
            assert 'fused chains: failed its self-check' in log
    assert np.abs(outs['broken'].astype(int) - outs['plain']).max() <= 1
