"""inference.py under ``mpirun --allow-run-as-root -np 2``: the same files and numbers as one process.

Needs Open MPI (skips without it, fails under SBVSR_REQUIRE_MPI=1; see
conftest.require_mpi). Tiny checkpoint (conftest.tiny), 32x48 LR clips
with ground truth: three frame folders of 5, 9 and 5 frames (19 windows:
rank 0 runs a and b's first 4, rank 1 the rest of b and c), and one 12-frame
video file with a ground-truth video (split 6/6, so rank 0 encodes it from
both ranks' frames). The single-process runs use the same environment
(one OpenMP thread), so the outputs must be equal byte for byte.
"""
import re
import sys
from types import SimpleNamespace

import pytest

from conftest import assert_ok, MPI_ENV, ROOT, mpirun, require_mpi, run_child
from test_bad_input import _frames
from test_video import H, W, make_clip

INFER = ROOT / 'inference.py'


@pytest.fixture(scope='module', autouse=True)
def need_mpi():
    require_mpi()


def _run(cmd):
    return run_child(cmd, capture_output=True, text=True, cwd=ROOT, env=MPI_ENV, timeout=600, encoding='utf-8')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny):
    """Each input set through one process and through two ranks: {kind: (single, mpi)} results."""
    root = tmp_path_factory.mktemp('mpi infer') / 'données'
    names = lambda n: [f'{t:08d}.png' for t in range(n)]  # noqa: E731
    for i, (video, n) in enumerate((('a', 5), ('b', 9), ('c', 5))):
        _frames(root / 'folders' / 'LR' / video, names(n), (H, W), seed=i)
        _frames(root / 'folders' / 'GT' / video, names(n), (4 * H, 4 * W), seed=10 + i)
    (root / 'video' / 'LR').mkdir(parents=True)
    (root / 'video' / 'GT').mkdir()
    make_clip(root / 'video' / 'LR' / 'clip.mp4', n=12)
    make_clip(root / 'video' / 'GT' / 'clip.mp4', n=12, audio=False, size=f'{4 * W}x{4 * H}')
    out = {}
    for kind, extra in (('folders', ['--border', '--save_kernel']), ('video', [])):
        args = ['--input_path', root / kind / 'LR', '--gt_path', root / kind / 'GT', '--model_path', tiny['x4'],
                '--result_path', root / 'out', '--device', 'cpu', *extra]
        single = _run([sys.executable, INFER, *map(str, args), '--infer_flag', f'{kind}_1'])
        mpi = _run(mpirun(2, INFER, *args, '--infer_flag', f'{kind}_2'))
        out[kind] = (single, mpi)
    return SimpleNamespace(root=root, out=root / 'out', results=out)


def _files(folder):
    """{relative path: bytes} of the outputs, the log aside."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file() and not p.name.startswith('inference_log_')}


def _log(folder):
    logs = list(folder.glob('inference_log_*.txt'))
    assert len(logs) == 1, logs
    return logs[0].read_text(encoding='utf-8').splitlines()


def _untimed(lines):
    """The log's lines with the timings and the run's own folder taken out."""
    return [re.sub(r'\d+\.\d+ ?s\b', '... s', line) for line in lines
            if not line.startswith(('result_path:', 'Results in', 'MPI: '))]


@pytest.mark.parametrize('kind', ['folders', 'video'])
def test_two_ranks_write_the_files_of_one_process(runs, kind):
    for r in runs.results[kind]:
        assert_ok(r)
    one, two = _files(runs.out / f'infer_{kind}_1'), _files(runs.out / f'infer_{kind}_2')
    assert sorted(one) == sorted(two)
    assert [p for p in one if one[p] != two[p]] == []
    if kind == 'folders':
        assert len([p for p in one if p.endswith('.png') and 'kernel' not in p]) == 19
    else:
        assert sorted(one) == ['clip.mp4']  # the parts rank 0 encoded from are gone


@pytest.mark.parametrize('kind', ['folders', 'video'])
def test_rank_0_logs_every_frame_in_order_with_the_same_numbers(runs, kind):
    single, mpi = runs.results[kind]
    assert_ok(mpi)
    one, two = _log(runs.out / f'infer_{kind}_1'), _log(runs.out / f'infer_{kind}_2')
    assert _untimed(one) == _untimed(two)
    assert [line for line in two if line.startswith('MPI: ')] == [
        'MPI: 2 ranks, each runs a share of the windows; this log has them all, in order']
    frames = [line for line in two if line.startswith('> ')]
    assert len(frames) == (19 if kind == 'folders' else 12)
    assert all('PSNR=' in line for line in frames)
    assert sum(line.startswith('# Total AVG-PSNR') for line in two) == 1
    assert mpi.stdout.count('# Total AVG-PSNR') == 1  # rank 1 prints nothing
    assert 'Traceback' not in mpi.stderr


def test_bad_input_fails_on_every_rank_before_any_output(runs, tiny):
    r = _run(mpirun(2, INFER, '--input_path', runs.root / 'folders' / 'LR', '--model_path', tiny['x2'],
                    '--gt_path', runs.root / 'folders' / 'GT', '--result_path', runs.out, '--infer_flag', 'bad',
                    '--device', 'cpu'))
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr
    # found in the text, not per line: mpirun forwards both ranks' stderr into one stream
    assert sorted(re.findall(r'error \(rank (\d)/2\): ', r.stderr)) == ['0', '1'], r.stderr
    assert not (runs.out / 'infer_bad').exists()
