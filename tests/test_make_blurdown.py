"""tools/make_blurdown_dataset.py (data/testsets.py): blurred-down test sets from HR videos."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jittor_sbvsr.data import degrade, kernels
from jittor_sbvsr.data.datasets import PairedTestSet
from conftest import BROKEN_INSTALLS, ROOT, run_child
from jittor_sbvsr.cli import make_blurdown
from jittor_sbvsr.data import testsets
from jittor_sbvsr.data.images import read_frame

TOOL = ROOT / 'tools' / 'make_blurdown_dataset.py'


@pytest.fixture
def hr_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / 'HRsrc'
    for v in ('clipA', 'clipB'):
        (root / v).mkdir(parents=True)
        for t in range(3):
            img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / v / f'{t:08d}.png')
    return root


def run(argv, capsys):
    rc = make_blurdown.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob('*'))


@pytest.mark.parametrize('kind', ['gaussian', 'realistic'])
def test_builds_paired_set(hr_root, tmp_path, capsys, kind):
    save = tmp_path / 'out'
    rc, out, err = run(['--hr_root', hr_root, '--save_root', save, '--type', kind, '--seed', 3], capsys)
    assert rc == 0, err
    assert '2 video(s), 6 frame(s)' in out
    files = tree(save)
    for v in ('clipA', 'clipB'):
        for t in range(3):
            assert f'HR/{v}/{t:08d}.png' in files
            assert f'LR_blurdown_x4/{v}/{t:08d}.png' in files
        assert f'kernels/{v}.npy' in files and f'kernels/{v}.png' in files
    assert not [f for f in files if os.path.basename(f).startswith('.')]
    for v in ('clipA', 'clipB'):
        k = np.load(save / 'kernels' / f'{v}.npy')
        if kind == 'gaussian':
            assert k.shape == (9, 9)
            np.testing.assert_array_equal(k, kernels.gaussian_kernel(9, 1.2).astype(np.float32))
        else:
            assert k.shape == (13, 13)
            np.testing.assert_array_equal(k, testsets.make_kernel('realistic', 3, v).astype(np.float32))
        assert k.sum() == pytest.approx(1, abs=1e-5)
        png = read_frame(save / 'kernels' / f'{v}.png')
        assert png.shape == (16 * k.shape[0], 16 * k.shape[1], 3) and png.max() == 255
        for t in range(3):
            hr = read_frame(hr_root / v / f'{t:08d}.png')
            np.testing.assert_array_equal(read_frame(save / 'HR' / v / f'{t:08d}.png'), hr)
            lr = read_frame(save / 'LR_blurdown_x4' / v / f'{t:08d}.png')
            assert lr.shape == (6, 8, 3)
            np.testing.assert_array_equal(lr, degrade.blur_down_uint8(hr, k, 4))
    if kind == 'realistic':
        a, b = (np.load(save / 'kernels' / f'{v}.npy') for v in ('clipA', 'clipB'))
        assert not np.array_equal(a, b)  # one kernel per video
    ts = PairedTestSet(str(save), n_seq=3)
    assert len(ts) == 2 and ts.get(0)['kernel'].shape == k.shape


def test_reproducible_with_seed(hr_root, tmp_path, capsys):
    outs = []
    for name, seed in (('a', 5), ('b', 5), ('c', 6)):
        save = tmp_path / name
        assert run(['--hr_root', hr_root, '--save_root', save, '--type', 'realistic',
                    '--seed', seed], capsys)[0] == 0
        outs.append(save)
    for f in tree(outs[0]):
        p = outs[0] / f
        if p.is_file():
            assert p.read_bytes() == (outs[1] / f).read_bytes(), f
    ka = np.load(outs[0] / 'kernels' / 'clipA.npy')
    assert not np.array_equal(ka, np.load(outs[2] / 'kernels' / 'clipA.npy'))


def test_hr_inside_save_root_and_rerun(hr_root, tmp_path, capsys):
    save = tmp_path / 'set'
    save.mkdir()
    os.replace(hr_root, save / 'HR')
    before = tree(save / 'HR')
    rc, _, err = run(['--hr_root', save / 'HR', '--save_root', save, '--type', 'gaussian'], capsys)
    assert rc == 0, err
    assert tree(save / 'HR') == before
    first = (save / 'LR_blurdown_x4' / 'clipA' / '00000000.png').read_bytes()
    rc, _, err = run(['--hr_root', save / 'HR', '--save_root', save, '--type', 'gaussian'], capsys)
    assert rc == 0, err
    assert (save / 'LR_blurdown_x4' / 'clipA' / '00000000.png').read_bytes() == first
    assert not [f for f in tree(save) if os.path.basename(f).startswith('.')]


def test_errors_write_nothing(hr_root, tmp_path, capsys):
    save = tmp_path / 'out'
    cases = []
    cases.append((['--hr_root', tmp_path / 'missing'], 'does not exist'))
    (tmp_path / 'empty').mkdir()
    cases.append((['--hr_root', tmp_path / 'empty'], 'no video sub-folders'))
    (hr_root / 'clipB' / '00000002.png').write_bytes(b'\x89PNG\r\n\x1a\ngarbage')
    cases.append((['--hr_root', hr_root], '00000002.png: cannot read image'))
    for args, msg in cases:
        rc, out, err = run(args + ['--save_root', save, '--type', 'realistic'], capsys)
        assert rc == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ') and msg in lines[0], err
        assert not save.exists()
    # an existing save_root keeps exactly what it had
    save.mkdir()
    (save / 'keep.txt').write_text('x', encoding='utf-8')
    rc, _, err = run(['--hr_root', hr_root, '--save_root', save, '--type', 'gaussian'], capsys)
    assert rc == 2 and tree(save) == ['keep.txt']


def test_frame_size_must_be_multiple_of_scale(tmp_path, capsys):
    (tmp_path / 'src' / 'v').mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / 'src' / 'v' / '0.png')
    rc, _, err = run(['--hr_root', tmp_path / 'src', '--save_root', tmp_path / 'o',
                      '--type', 'gaussian'], capsys)
    assert rc == 2 and 'not a multiple of the scale 4' in err
    assert not (tmp_path / 'o').exists()


def test_cli_bad_arguments_one_line(tmp_path):
    r = run_child([sys.executable, str(TOOL), '--hr_root', str(tmp_path), '--save_root',
                        str(tmp_path / 'o'), '--type', 'motion'], capture_output=True, text=True, encoding='utf-8')
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'motion' in lines[0]
    r = run_child([sys.executable, str(TOOL), '--hr_root', str(tmp_path / 'nope'),
                        '--save_root', str(tmp_path / 'o'), '--type', 'gaussian'],
                  capture_output=True, text=True, encoding='utf-8')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0
    assert r.stderr.startswith('error: ') and 'nope' in r.stderr
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('cause', sorted(BROKEN_INSTALLS))
def test_cli_on_an_unusable_installation_one_line(hr_root, tmp_path, cause, broken_install):
    r = run_child([sys.executable, str(TOOL), '--hr_root', str(hr_root), '--save_root', str(tmp_path / 'o'),
                        '--type', 'gaussian'], capture_output=True, text=True,
                  env=dict(os.environ, **broken_install(cause)), encoding='utf-8')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and BROKEN_INSTALLS[cause] in r.stderr
    assert not (tmp_path / 'o').exists()
