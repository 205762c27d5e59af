"""The public parity case: recipe weights, the reference's frames and outputs.

Tolerances are those that come with the reference data (tests/reference: the original code's outputs for the
public case; docs/porting.md, "Reference data"); they are not to be loosened.
"""
import json

import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401  (configures Jittor)
import jittor as jt
from jittor_sbvsr.data.folders import list_videos
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.windows import frames_to_input, to_uint8, window_indices
from jittor_sbvsr.infer.engine import VideoSR
from jittor_sbvsr.weights.recipe import recipe_state, state_sha256
from jittor_sbvsr.metrics.psnr_ssim import psnr_ssim
from jittor_sbvsr.models import PWC_Recons

RECIPE_SHA = '68a1761c3229d171b195b9bb7aac1da7ae547163e321a57c33d797abef0fae7d'


def _key_file(reference_dir):
    keys = (reference_dir / 'upstream_state_dict_keys.txt').read_text(encoding='utf-8')
    rows = [line.split('\t') for line in keys.splitlines()]
    return [(k, tuple(int(s) for s in shape.split(',')), dt) for k, shape, dt in rows]


@pytest.fixture(scope='module')
def model(reference_dir):
    m = PWC_Recons()
    m.eval()
    state = recipe_state({k: v.shape for k, v in m.state_dict().items()}, seed=1234)
    assert state_sha256(state) == RECIPE_SHA
    m.load_parameters(state)
    return m


@pytest.fixture(scope='module')
def raw(public_case):
    return dict(np.load(public_case / 'upstream_raw.npz'))


@pytest.fixture(scope='module', params=['model', 'engine'])
def case_run(model, public_case, request):
    """Every window of both videos: through the model's execute (as the
    reference's inference), or through the default engine (VideoSR: reuse,
    fused oneDNN chains on the CPU, composed tail) as the CLI runs it."""
    out = {}
    for name, paths in list_videos(public_case / 'LR'):
        frames = [read_frame(p) for p in paths]
        windows = window_indices(len(frames), 5, border=True)
        if request.param == 'engine':
            for t, recons, kernel, _ in VideoSR(model).windows(frames, windows):
                out[(name, t)] = (recons, kernel[None, None])
            continue
        for t, idx in enumerate(windows):
            with jt.no_grad():
                res, _ = model({'x': jt.array(frames_to_input([frames[i] for i in idx])), 'mode': 'infer'})
                out[(name, t)] = (res['recons'].numpy(), res['est_kernel'].numpy())
    return out


def test_state_dict_matches_reference_keys(reference_dir):
    sd = PWC_Recons().state_dict()
    mine = [(k, tuple(v.shape), str(v.dtype)) for k, v in sd.items()]
    assert mine == _key_file(reference_dir)
    assert sum(int(np.prod(s)) for _, s, _ in mine) == 18_900_215


def test_recipe_checksums(reference_dir, public_case):
    sums = json.loads((public_case / 'weights_checksums.json').read_text(encoding='utf-8'))
    state = recipe_state({k: s for k, s, _ in _key_file(reference_dir)})
    assert state_sha256(state) == RECIPE_SHA
    assert sums['sha256_f32le_concat_in_key_order'] == RECIPE_SHA
    for key, ref in sums['per_key'].items():
        w = state[key]
        assert list(w.shape) == ref['shape'], key
        assert abs(float(w.astype(np.float64).sum()) - ref['sum_f64']) <= 1e-9 * max(1.0, abs(ref['sum_f64'])), key
        assert float(np.abs(w).max()) == pytest.approx(ref['absmax'], abs=0), key


@pytest.mark.parametrize('video', ['000', '001'])
def test_first_window_flows_kernel_recons(model, raw, video):
    x = jt.array(raw[f'{video}__input'])
    frames = [x[:, i] for i in range(5)]
    with jt.no_grad():
        for i in (0, 1, 3, 4):
            flow = model.flow_net(frames[2], frames[i]).numpy()
            assert flow.shape == (1, 2, 32, 48)
            assert np.abs(flow - raw[f'{video}__flow_c_to_{i}']).max() <= 1e-4
        res, mid = model({'x': x, 'mode': 'infer'})
    assert mid is None and set(res) == {'recons', 'est_kernel'}
    assert np.abs(res['est_kernel'].numpy() - raw[f'{video}__est_kernel']).max() <= 1e-8
    assert np.abs(res['recons'].numpy() - raw[f'{video}__recons']).max() <= 1e-5


@pytest.mark.parametrize('video', ['000', '001'])
def test_first_window_engine(model, raw, video):
    """The default engine (reuse, fused, composed tail) on the reference's first window."""
    x = raw[f'{video}__input']
    frames = list(np.rint(x[0].transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    assert np.array_equal(frames_to_input(frames), x)
    _, recons, kernel, _ = next(VideoSR(model).windows(frames, [list(range(5))]))
    assert np.abs(kernel - raw[f'{video}__est_kernel'][0, 0]).max() <= 1e-8
    assert np.abs(recons - raw[f'{video}__recons']).max() <= 1e-5


def test_every_window_png_and_kernel(case_run, public_case):
    diffs = []
    for (video, t), (recons, kernel) in case_run.items():
        ref_png = read_frame(public_case / 'upstream_sr' / video / f'{t:08d}.png')
        mine = to_uint8(recons)
        d = np.abs(mine.astype(np.int16) - ref_png.astype(np.int16))
        assert d.max() <= 1, (video, t, d.max())
        diffs.append(d)
        ref_k = np.load(public_case / 'upstream_kernel' / video / f'{t:08d}.npy')
        assert np.abs(kernel[0, 0] - ref_k).max() <= 1e-8, (video, t)
    assert len(diffs) == 14
    frac = np.mean(np.concatenate([d.ravel() for d in diffs]) > 0)
    assert frac <= 1e-3


def test_metrics_against_hr(case_run, public_case):
    ref = json.loads((public_case / 'upstream_metrics.json').read_text(encoding='utf-8'))
    vals = []
    for (video, t), (recons, _) in sorted(case_run.items()):
        gt = read_frame(public_case / 'HR' / video / f'{t:08d}.png')
        vals.append(psnr_ssim(to_uint8(recons), gt))
    p, s = np.mean(vals, axis=0)
    total = ref['total']
    assert abs(p - total['psnr']) <= 1e-3
    assert abs(s - total['ssim']) <= 1e-5
