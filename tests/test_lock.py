"""One run per output folder (utils/lock.py): a second run into a folder a live run holds is one
line naming that run; a killed run's lock file blocks nothing."""
import subprocess
import sys

import pytest

from conftest import ROOT
from test_bad_input import _frames, _names
from test_inference_cli import assert_clean_error, run_cli

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.utils import lock

HOLD = ('import sys; from jittor_sbvsr.utils.lock import FolderLock; held = FolderLock(sys.argv[1]); '
        'print("held", flush=True); sys.stdin.read(); held.release()')


def _holder(folder):
    """A process that holds ``folder``'s lock until its stdin closes (then releases it)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(folder), 'the-other-run'], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, cwd=ROOT, text=True, encoding='utf-8')
    assert p.stdout.readline().strip() == 'held'
    return p


def test_a_held_folder_is_refused_naming_the_process_and_freed_when_it_ends(tmp_path):
    folder = tmp_path / 'run ü'
    p = _holder(folder)
    try:
        assert lock.holder(folder).startswith(f'process {p.pid} (') and 'the-other-run' in lock.holder(folder)
        with pytest.raises(UserError, match=rf'another run is writing there now, process {p.pid} \('):
            lock.FolderLock(folder)
    finally:
        p.stdin.close()
        p.wait()
    assert lock.holder(folder) is None and not (folder / lock.NAME).exists()  # released: removed
    with lock.FolderLock(folder) as held:
        assert (folder / lock.NAME).is_file() and lock.holder(folder) is not None
    assert not (folder / lock.NAME).exists() and held._f is None


def test_a_killed_runs_lock_file_blocks_nothing(tmp_path):
    folder = tmp_path / 'run'
    p = _holder(folder)
    p.kill()  # no release: the file stays, the OS lock goes with the process
    p.wait()
    assert (folder / lock.NAME).is_file() and lock.holder(folder) is None
    with lock.FolderLock(folder):
        assert str(sys.argv[0]) in (folder / lock.NAME).read_text(encoding='utf-8')


def test_a_second_run_into_a_running_runs_folder_is_one_error_line(tmp_path, tiny):
    _frames(tmp_path / 'LR' / 'v', _names(5), (32, 48), 0)
    args = ['--input_path', tmp_path / 'LR', '--model_path', tiny['x4'], '--result_path', tmp_path / 'out']
    running = tmp_path / 'out' / 'infer_same'
    p = _holder(running)
    try:
        for extra in (['--infer_flag', 'same'], ['--infer_flag', 'same', '--resume']):
            assert_clean_error(run_cli(*args, *extra), str(running), 'another run is writing there now',
                               f'process {p.pid}')
        assert sorted(f.name for f in running.iterdir()) == [lock.NAME]
    finally:
        p.kill()  # as a kill -9 of that run
        p.wait()
    r = run_cli(*args, '--infer_flag', 'same', '--resume')  # its lock file blocks nothing
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((running / 'v').glob('*.png'))) == 1 and not (running / lock.NAME).exists()
