"""--resume: a run killed (SIGKILL) at any point and rerun with --resume ends with the outputs and the
log values of an uninterrupted run; a resume with other flags or another model is one error line.

Tiny checkpoint (conftest.tiny), 32x48 LR frames with ground truth: two frame folders of 5 and 4
frames (9 windows with --border), and a 12-frame video file. The kills: by the fault
``kill_after=N`` of tests/fault_run.py (the host worker kills the main process once it has recorded N
frames; N=1, at the end of the first video, and inside the second), and one SIGKILL from outside at a
random time.
"""
import json
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, child_env, posix_only
from test_bad_input import _frames, _names
from test_inference_cli import assert_clean_error, run_cli
from test_video import H, W, make_clip

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.data.video import VideoReader
from jittor_sbvsr.infer.host import DEPTH
from jittor_sbvsr.infer.resume import NAME
from jittor_sbvsr.utils.memory import format_size


@pytest.fixture(scope='module')
def data(tmp_path_factory, tiny):
    """The inputs and an uninterrupted run of each (folders with kernels; a video file)."""
    root = tmp_path_factory.mktemp('resume')
    for i, (video, n) in enumerate((('a', 5), ('b', 4))):
        _frames(root / 'LR' / video, _names(n), (H, W), seed=i)
        _frames(root / 'GT' / video, _names(n), (4 * H, 4 * W), seed=10 + i)
    (root / 'clip').mkdir()
    make_clip(root / 'clip' / 'c.mp4', n=12)
    make_clip(root / 'clip_gt.mp4', n=12, audio=False, size=f'{4 * W}x{4 * H}')
    data = {'root': root, 'model': tiny['x4'], 'out': root / 'out'}
    for kind in ('folders', 'video'):
        r = run_cli(*_args(data, kind), '--infer_flag', f'{kind}_whole')
        assert r.returncode == 0, r.stderr[-3000:]
    return data


def run_with_fault(fault, *args):
    """inference.py with ``fault`` (tests/fault_run.py)."""
    return subprocess.run([sys.executable, str(ROOT / 'tests' / 'fault_run.py'), fault, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900, encoding='utf-8')


def _args(data, kind):
    root = data['root']
    if kind == 'folders':
        extra = ['--input_path', root / 'LR', '--gt_path', root / 'GT', '--border', '--save_kernel']
    else:
        extra = ['--input_path', root / 'clip' / 'c.mp4', '--gt_path', root / 'clip_gt.mp4']
    return ['--model_path', data['model'], '--result_path', data['out'], '--device', 'cpu', *extra]


def _files(folder):
    """{relative path: bytes} of the outputs, the logs aside."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file() and not p.name.startswith('inference_log_')}


def _frame_lines(folder):
    """The per-frame lines and averages of the newest log, timings out."""
    log = sorted(folder.glob('inference_log_*.txt'))[-1].read_text(encoding='utf-8').splitlines()
    assert log[-1].startswith('completed: '), log[-5:]
    return [re.sub(r'forward_time=\S+', '', line) for line in log if line.startswith(('> ', '# '))]


def _recorded(folder):
    """The frames the record in ``folder`` names: [(video, window index)]."""
    lines = (folder / NAME).read_text(encoding='utf-8').splitlines()
    return [(r['v'], r['k']) for r in map(json.loads, lines[1:])]


def _same_as_whole(data, kind, flag):
    whole, resumed = data['out'] / f'infer_{kind}_whole', data['out'] / f'infer_{flag}'
    one, two = _files(whole), _files(resumed)
    assert sorted(one) == sorted(two)
    assert [p for p in one if one[p] != two[p]] == []
    assert _frame_lines(resumed) == _frame_lines(whole)
    assert not (resumed / NAME).exists()


@posix_only('a run killed by SIGKILL')
@pytest.mark.parametrize('after', [1, 5, 7])
def test_killed_after_n_frames_and_resumed_gives_the_uninterrupted_run(data, after):
    """Killed after the first frame, at the end of the first video, and inside the second."""
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    flag = f'folders_k{after}'
    r = run_with_fault(f'kill_after={after}', *_args(data, 'folders'), '--infer_flag', flag)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    out = data['out'] / f'infer_{flag}'
    # the worker finished and recorded the frames it had been sent (up to DEPTH beyond the kill's):
    # only the window the network was on is lost; the files and the record name the same frames
    kept = len(_recorded(out))
    assert after <= kept <= min(9, after + DEPTH)
    pngs = {(p.parent.name, p.stem) for p in out.rglob('*.png') if 'kernel' not in p.parts}
    kernels = {(p.parent.parent.name, p.stem) for p in out.rglob('kernel/*.npy')}
    assert len(pngs) == kept and kernels == pngs
    # the default memory budget follows the free memory: a resumed run takes the earlier run's
    lines = (out / NAME).read_text(encoding='utf-8').splitlines(keepends=True)
    head = json.loads(lines[0])
    assert isinstance(head['signature']['budget'], int)
    head['signature']['budget'] = 2 ** 40 + after  # a value no machine here has free: seen in the log
    (out / NAME).write_text(json.dumps(head) + '\n' + ''.join(lines[1:]), encoding='utf-8')
    r = run_cli(*_args(data, 'folders'), '--infer_flag', flag, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"memory budget: {format_size(2 ** 40 + after)}, the earlier run's (it tiles as that run did)" in r.stdout
    assert f'resume: {kept} frame(s) finished by the earlier run are kept' in r.stdout
    assert f'completed: {9 - kept} frames of 2 video(s) (and {kept} kept from the earlier run)' in r.stdout
    _same_as_whole(data, 'folders', flag)


@posix_only('a run killed by SIGKILL')
def test_a_video_file_is_completed_with_the_frames_of_the_uninterrupted_run(data):
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    flag = 'video_k5'
    r = run_with_fault('kill_after=5', *_args(data, 'video'), '--infer_flag', flag)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    out = data['out'] / f'infer_{flag}'
    assert not (out / 'c.mp4').exists()
    r = run_cli(*_args(data, 'video'), '--infer_flag', flag, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    whole = data['out'] / 'infer_video_whole' / 'c.mp4'
    with VideoReader(whole) as a, VideoReader(out / 'c.mp4') as b:
        fa, fb = list(a), list(b)
    assert len(fa) == len(fb) == 12
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    _same_as_whole(data, 'video', flag)  # the mp4 byte for byte, no parts left


@posix_only('a run killed by SIGKILL')
def test_a_sigkill_at_a_random_time_then_resume(data):
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    flag = 'folders_random'
    out = data['out'] / f'infer_{flag}'
    cmd = [sys.executable, str(ROOT / 'inference.py'), *map(str, _args(data, 'folders')), '--infer_flag', flag]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=child_env())
    try:
        # at a random point of the run, but before its end (the run is short on an idle machine):
        # once a random number of frames is logged, after a random part of a frame's time
        k, t0 = random.randint(1, 6), time.time()
        while not list(out.glob('inference_log_*.txt')) or next(out.glob('inference_log_*.txt')).read_text(
                encoding='utf-8').count('> ') < k:
            assert p.poll() is None and time.time() - t0 < 600
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.05))
        assert p.poll() is None, 'the run ended before the kill'
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    r = run_cli(*_args(data, 'folders'), '--infer_flag', flag, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    _same_as_whole(data, 'folders', flag)


@posix_only('a run killed by SIGKILL')
def test_resume_with_other_flags_or_model_is_one_error_line(data):
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    flag = 'folders_bad'
    r = run_with_fault('kill_after=2', *_args(data, 'folders'), '--infer_flag', flag)
    assert r.returncode == -signal.SIGKILL
    out = data['out'] / f'infer_{flag}'
    before = _files(out)
    other_flags = [a for a in _args(data, 'folders') if a != '--save_kernel']
    assert_clean_error(run_cli(*other_flags, '--infer_flag', flag, '--resume'),
                       str(out), '--resume with other inputs or flags', '--save_kernel True, now False')
    from jittor_sbvsr.weights.checkpoint import load_state, save_state_atomic
    state = load_state(data['model'])
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3  # the same architecture, other weights
    other = data['root'] / 'other x4.pkl'
    save_state_atomic(state, other)
    other_model = [other if a == data['model'] else a for a in _args(data, 'folders')]
    assert_clean_error(run_cli(*other_model, '--infer_flag', flag, '--resume'), 'another checkpoint')
    assert_clean_error(run_cli(*_args(data, 'folders'), '--infer_flag', flag),
                       str(out), 'already holds', 'with --resume to continue it')
    assert _files(out) == before  # nothing touched
    assert_clean_error(run_cli(*_args(data, 'folders'), '--resume'), '--resume needs the --infer_flag')
    assert_clean_error(run_cli(*_args(data, 'folders'), '--infer_flag', 'folders_whole', '--resume'),
                       'holds a finished run', 'nothing to resume')


def test_resume_is_refused_under_mpirun(data):
    """Checked from the environment mpirun sets, before anything is read or written."""
    r = run_cli(*_args(data, 'folders'), '--infer_flag', 'mpi', '--resume',
                env={'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '0'})
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith('error')] == [
        'error (rank 0/2): --resume does not work under mpirun (a run there keeps no record of its frames); '
        'resume it in one process, or rerun it with another --infer_flag']
    assert not (data['out'] / 'infer_mpi').exists()


def test_a_run_whose_scorer_never_answers_ends_with_the_same_log(data):
    """infer/scorer.py on a machine that leaves its idle-priority scorer no CPU: the main process's
    waits reach the host worker, which then scores each frame itself, with the same numbers."""
    flag = 'stalled_scorer'
    t0 = time.time()
    r = run_with_fault('scorer_stalls', *_args(data, 'folders'), '--infer_flag', flag)
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.time() - t0 < 300
    assert _frame_lines(data['out'] / f'infer_{flag}') == _frame_lines(data['out'] / 'infer_folders_whole')
