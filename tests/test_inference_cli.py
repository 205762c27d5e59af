"""inference.py end to end: parity through the CLI, GT-less runs, bad input."""
import os
import shutil
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from conftest import ROOT, run_child

import jittor_sbvsr
from jittor_sbvsr.data.images import read_frame


def run_cli(*args, env=None, cwd=None):
    e = dict(os.environ, **(env or {}))
    return run_child([sys.executable, str(ROOT / 'inference.py'), *map(str, args)],
                     capture_output=True, text=True, env=e, cwd=cwd or ROOT, timeout=900, encoding='utf-8')


def assert_clean_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert len(err) == 1, r.stderr
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


@pytest.fixture(scope='session')
def no_torch(tmp_path_factory):
    """PYTHONPATH entry that makes `import torch` fail, as on a user's machine."""
    d = tmp_path_factory.mktemp('notorch')
    (d / 'torch').mkdir()
    (d / 'torch' / '__init__.py').write_text("raise ImportError('torch is blocked in this test')\n", encoding='utf-8')
    return {'PYTHONPATH': str(d)}


def _clip(root, video, n, size=(32, 48), mode='RGB', seed=0):
    rng = np.random.RandomState(seed)
    d = root / video
    d.mkdir(parents=True)
    for t in range(n):
        img = rng.randint(0, 256, size + (3,)).astype(np.uint8)
        if mode == 'L':
            img = img[..., 0]
        elif mode == 'RGBA':
            img = np.concatenate([img, np.full(size + (1,), 200, np.uint8)], 2)
        elif mode == 'I16':
            img = img[..., 0].astype(np.uint16) * 257
        imageio.imwrite(d / f'{t:08d}.png', img)
    return d


@pytest.mark.parametrize('extra', [[], ['--no_fused']], ids=['fused', 'jittor_convs'])
def test_public_case_through_cli(public_case, recipe_pkl, tmp_path, extra):
    out = tmp_path / 'résultats ü'
    r = run_cli('--input_path', public_case / 'LR', '--gt_path', public_case / 'HR', '--model_path', recipe_pkl,
                '--result_path', out, '--border', '--save_kernel', '--infer_flag', 'case', *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '# Total AVG-PSNR=20.765' in r.stdout and 'AVG-SSIM=0.4513' in r.stdout
    res = out / 'infer_case'
    diffs = []
    for video in ('000', '001'):
        for t in range(7):
            mine = read_frame(res / video / f'{t:08d}.png')
            ref = read_frame(public_case / 'upstream_sr' / video / f'{t:08d}.png')
            d = np.abs(mine.astype(int) - ref.astype(int))
            assert d.max() <= 1
            diffs.append(d)
            k = np.load(res / video / 'kernel' / f'{t:08d}.npy')
            ref_k = np.load(public_case / 'upstream_kernel' / video / f'{t:08d}.npy')
            assert np.abs(k - ref_k).max() <= 1e-8
            assert (res / video / 'kernel' / f'{t:08d}.png').is_file()
    assert np.mean(np.concatenate([d.ravel() for d in diffs]) > 0) <= 1e-3
    logs = list(res.glob('inference_log_*.txt'))
    assert len(logs) == 1 and 'Total AVG-PSNR=20.765' in logs[0].read_text(encoding='utf-8')


def test_gt_less_run_without_torch(tmp_path, recipe_pkl, no_torch):
    lr = tmp_path / 'my LR'
    _clip(lr, 'clip', 3)
    r = run_cli('--input_path', lr, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out',
                '--border', '--infer_flag', 'x', env=no_torch)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'PSNR' not in r.stdout
    pngs = sorted((tmp_path / 'out' / 'infer_x' / 'clip').glob('*.png'))
    assert [p.name for p in pngs] == ['00000000.png', '00000001.png', '00000002.png']
    assert read_frame(pngs[0]).shape == (128, 192, 3)


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'I16'])
def test_other_png_kinds_are_converted(tmp_path, tiny, mode):
    """Grey, RGBA and 16-bit PNGs run as the 8-bit RGB frames they hold: the same SR frame (the
    Python API's, on those RGB frames) and kernel."""
    lr = tmp_path / 'lr'
    _clip(lr, 'v', 5, mode=mode)
    r = run_cli('--input_path', lr, '--model_path', tiny['x4'], '--result_path', tmp_path / 'o',
                '--infer_flag', 'k', '--save_kernel', '--device', 'cpu')
    assert r.returncode == 0, r.stderr[-3000:]
    rgb = _clip(tmp_path / 'rgb', 'v', 5)  # the same random frames, as 8-bit RGB
    rgb = [read_frame(p) for p in sorted(rgb.glob('*.png'))]
    if mode != 'RGBA':  # grey (8 or 16 bits): the first channel, repeated
        rgb = [np.repeat(f[..., :1], 3, axis=2) for f in rgb]
    (sr,) = jittor_sbvsr.SelfBlindVSR(tiny['x4'], device='cpu').frames(rgb, border=False)
    out = tmp_path / 'o' / 'infer_k' / 'v'
    assert np.array_equal(read_frame(out / '00000002.png'), sr)
    assert len(list((out / 'kernel').glob('*.npy'))) == 1


def test_quick_test_with_data_missing(tmp_path):
    repo = tmp_path / 'repo'
    shutil.copytree(ROOT / 'jittor_sbvsr', repo / 'jittor_sbvsr', ignore=shutil.ignore_patterns('__pycache__'))
    for script in ('inference.py', 'jittor_sbvsr_launcher.py'):
        shutil.copy(ROOT / script, repo)
    r = run_child([sys.executable, str(repo / 'inference.py'), '--quick_test', 'Realistic_REDS4'],
                  capture_output=True, text=True, cwd=tmp_path, timeout=600, encoding='utf-8')
    err = assert_clean_error(r, 'Realistic_REDS4')
    assert os.path.join('dataset', 'REDS4_BlurDown_Realistic', 'LR_blurdown_x4') in err
    assert os.path.join('pretrain_models', 'self_blind_vsr_realistic.pkl') in err
    assert 'csbhr/Self-Blind-VSR' in err


def test_unknown_quick_test():
    assert_clean_error(run_cli('--quick_test', 'Nope'), 'Nope', 'Realistic_REDS4')


def test_empty_input_folder(tmp_path, recipe_pkl):
    (tmp_path / 'empty').mkdir()
    assert_clean_error(run_cli('--input_path', tmp_path / 'empty', '--model_path', recipe_pkl,
                               '--result_path', tmp_path / 'o'), 'empty')
    assert not (tmp_path / 'o').exists()


def test_fewer_frames_than_window(tmp_path, recipe_pkl):
    _clip(tmp_path / 'lr', 'short', 3)
    assert_clean_error(run_cli('--input_path', tmp_path / 'lr', '--model_path', recipe_pkl,
                               '--result_path', tmp_path / 'o'), 'short', '3 frame')
    assert not (tmp_path / 'o').exists()


def test_lr_gt_frame_count_mismatch(tmp_path, recipe_pkl):
    _clip(tmp_path / 'lr', 'v', 5)
    _clip(tmp_path / 'gt', 'v', 4, size=(128, 192))
    assert_clean_error(run_cli('--input_path', tmp_path / 'lr', '--gt_path', tmp_path / 'gt',
                               '--model_path', recipe_pkl, '--result_path', tmp_path / 'o'), '5 LR frames', '4')


def test_missing_and_wrong_model(tmp_path, recipe_pkl):
    _clip(tmp_path / 'lr', 'v', 5)
    assert_clean_error(run_cli('--input_path', tmp_path / 'lr', '--model_path', tmp_path / 'none.pkl',
                               '--result_path', tmp_path / 'o'), 'none.pkl')
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(b'not a pickle at all')
    assert_clean_error(run_cli('--input_path', tmp_path / 'lr', '--model_path', bad,
                               '--result_path', tmp_path / 'o'), 'bad.pkl')
    assert not (tmp_path / 'o').exists()


def test_corrupt_frame(tmp_path, recipe_pkl):
    d = _clip(tmp_path / 'lr', 'v', 5)
    (d / '00000002.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    assert_clean_error(run_cli('--input_path', tmp_path / 'lr', '--model_path', recipe_pkl,
                               '--result_path', tmp_path / 'o'), '00000002.png')
