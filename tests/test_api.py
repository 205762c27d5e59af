"""The Python API (jittor_sbvsr/api.py): the command's frames from a program, byte for byte.

A tiny checkpoint (conftest.tiny) on random 32x48 frames: what is compared
is the pipeline around the model (windows, border, uint8 output), which
does not depend on the model's size.
"""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, infer_here
from test_bad_input import _frames, _names
from test_inference_cli import run_cli

import jittor_sbvsr
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.errors import UserError


def _read(folder):
    return [read_frame(p) for p in sorted(folder.glob('*.png'))]


@pytest.fixture(scope='module')
def sr(tiny):
    return jittor_sbvsr.SelfBlindVSR(tiny['x4'], device='cpu')


@pytest.mark.parametrize('border', [True, False], ids=['border', 'no_border'])
def test_frames_are_the_cli_pngs(tmp_path, tiny, sr, border):
    lr = _frames(tmp_path / 'LR' / 'v', _names(7), (32, 48), 5)
    infer_here('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--result_path', tmp_path / 'out',
               '--infer_flag', 'cli', '--device', 'cpu', *(['--border'] if border else []))
    cli = _read(tmp_path / 'out' / 'infer_cli' / 'v')
    got = list(sr.frames((f for f in _read(lr)), border=border))
    assert len(got) == len(cli) == (7 if border else 3)
    for a, b in zip(got, cli):
        assert a.dtype == np.uint8 and a.shape == (128, 192, 3)
        assert np.array_equal(a, b)


def test_frames_are_read_as_the_windows_need_them(sr):
    """A long stream is never read whole: at each SR frame, at most a window and a half ahead."""
    rng = np.random.RandomState(0)
    read = [0]

    def stream():
        for _ in range(12):
            read[0] += 1
            yield rng.randint(0, 256, (32, 48, 3)).astype(np.uint8)
    ahead = []
    for i, _ in enumerate(sr.frames(stream())):
        ahead.append(read[0] - i)
    assert len(ahead) == 12
    assert max(ahead) <= sr.n_seq + sr.n_seq // 2, ahead
    assert ahead[0] < 12


def test_bad_frames_are_user_errors_with_the_cli_message(tmp_path, tiny, sr):
    ok = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(UserError, match=r'^frame 2: frame is 30x48, but frame 0 of the same video is 32x48'):
        list(sr.frames([ok, ok, np.zeros((30, 48, 3), np.uint8)]))
    with pytest.raises(UserError, match=r'^frame 1: an HxWx3 uint8 array'):
        list(sr.frames([ok, ok[..., 0]]))
    with pytest.raises(UserError, match=r'^frame 0: an HxWx3 uint8 array'):
        list(sr.frames([ok.astype(np.float32)]))
    # too short a video: the command's message
    _frames(tmp_path / 'LR' / 'v', _names(1), (32, 48), 0)
    r = run_cli('--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--result_path', tmp_path / 'o',
                '--border')
    with pytest.raises(UserError) as err:
        list(sr.frames([ok]))
    assert r.returncode == 2 and str(err.value).split('; ')[1] in r.stderr
    missing = tmp_path / 'nope.pkl'
    r = run_cli('--input_path', tmp_path / 'LR', '--model_path', missing, '--result_path', tmp_path / 'o')
    with pytest.raises(UserError) as err:
        jittor_sbvsr.SelfBlindVSR(missing)
    assert f'error: {err.value}' in r.stderr


def test_run_returns_what_the_log_says(tmp_path, sr):
    lr = _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 1)
    gt = _frames(tmp_path / 'GT' / 'v', _names(5), (128, 192), 2)
    res = sr.run(lr.parent, gt_path=gt.parent, result_path=tmp_path / 'out', infer_flag='api')
    log = next((tmp_path / 'out' / 'infer_api').glob('inference_log_*.txt')).read_text(encoding='utf-8')
    total = re.search(r'# Total AVG-PSNR=([\d.]+), AVG-SSIM=([\d.]+) \(5 frames\)', log)
    assert total and f'{res.psnr:.5f}' == total[1] and f'{res.ssim:.4f}' == total[2]
    assert res.frames == 5 and len(res.videos['v'].frames) == 5 and res.seconds > 0
    for k, (p, q, _) in enumerate(res.videos['v'].frames):
        assert f'> v-{k:08d} PSNR={p:.5f}, SSIM={q:.4f}' in log
    with pytest.raises(TypeError, match='unknown flags: nope'):
        sr.run(lr.parent, nope=1)


def test_video_file_keeps_every_frame(tmp_path, tiny, sr):
    from test_video import H, W, make_clip
    from jittor_sbvsr.data.video import VideoReader, probe
    clip = make_clip(tmp_path / 'clip.mp4', n=6)
    sr.video(clip, tmp_path / 'clip_x4.mp4')
    infer_here('--input_path', clip, '--model_path', tiny['x4'], '--result_path', tmp_path / 'out',
               '--infer_flag', 'cli', '--device', 'cpu')
    info = probe(tmp_path / 'clip_x4.mp4')
    assert info.n_frames == 6 and info.size == (4 * H, 4 * W) and info.has_audio
    with VideoReader(str(tmp_path / 'clip_x4.mp4')) as a, VideoReader(str(tmp_path / 'out' / 'infer_cli' / 'clip.mp4')) as b:
        for x, y in zip(a.frames(), b.frames()):
            assert np.array_equal(x, y)  # the same frames through the same encoder


def test_import_stays_light():
    """``import jittor_sbvsr`` loads neither Jittor nor the API; the name loads both."""
    code = ('import sys, jittor_sbvsr; assert "jittor" not in sys.modules and "jittor_sbvsr.api" not in sys.modules; '
            'jittor_sbvsr.SelfBlindVSR; assert "jittor_sbvsr.api" in sys.modules')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, encoding='utf-8')
    assert r.returncode == 0, r.stderr[-2000:]


def test_readme_example_runs(tmp_path, tiny):
    """The README's example, as written, in a folder holding the files it names."""
    from test_video import make_clip
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    code = re.search(r'<!-- api example -->\s*```python\n(.*?)```', readme, re.S)[1]
    (tmp_path / 'pretrain_models').mkdir()
    (tmp_path / 'pretrain_models' / 'self_blind_vsr_realistic.pkl').write_bytes(tiny['x4'].read_bytes())
    _frames(tmp_path / 'dataset' / 'input' / '000', _names(5), (32, 48), 3)
    _frames(tmp_path / 'dataset' / 'gt' / '000', _names(5), (128, 192), 4)
    make_clip(tmp_path / 'clip.mp4', n=5)
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, encoding='utf-8',
                       env={**__import__('os').environ, 'PYTHONPATH': str(ROOT)}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / 'sr').glob('*.png'))) == 5
    assert (tmp_path / 'clip_x4.mp4').is_file()
    assert re.search(r'PSNR \d+\.\d+ dB', r.stdout), r.stdout
