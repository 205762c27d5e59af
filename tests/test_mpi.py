"""Data-parallel training under Open MPI: ``mpirun --allow-run-as-root -np 2`` on the CPU.

Needs Open MPI (``mpirun`` and ``mpicc``; ``env/setup.sh --test`` installs it
as root). Without it these tests skip, except under ``SBVSR_REQUIRE_MPI=1``
(set by ``.ci/run``), where a missing Open MPI fails them.

The runs use the demo template on two tiny synthetic clips (see
test_training.py): 4 samples per epoch, 2 updates per epoch.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import assert_ok, MPI_ENV, child_env, mpirun, posix_only, require_mpi, run_child
from jittor_sbvsr.weights.checkpoint import load_state

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / 'main.py')
DRIVER = str(ROOT / 'tests' / 'mpi_train.py')
ENV = MPI_ENV

# Two ranks x batch 1 against one process x batch 2, after 4 Adam steps. The
# gradients are the same sums taken in another order (per-rank means, then
# Jittor's all-reduce mean, against one batch mean), so they differ by float32
# rounding. Adam divides each gradient by its own running magnitude, so a
# rounding-level difference matters only for weights whose gradient is close
# to 0 (it can tip such a weight's step, at most one lr = 1e-4); everywhere
# else it stays at rounding level. Measured: 99.999% of the weights within
# 1e-7, the largest difference 1e-6 (KernelNet's last layers). Bounds: max
# 1e-5 (a tenth of one step), at most 1e-4 of the weights beyond 1e-7.
WEIGHT_ATOL = 1e-5
WEIGHT_FRACTION_BEYOND_1E7 = 1e-4
LOSS_RTOL = 1e-5


@pytest.fixture(scope='module', autouse=True)
def need_mpi():
    require_mpi()


def run(cmd, timeout=900):
    return run_child(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout, encoding='utf-8')


def demo_args(clips, exp, save, *extra):
    return ['--template', 'Self_Blind_VSR_Demo', '--cpu', '--dir_data', clips, '--dir_data_test', clips,
            '--experiment_dir', exp, '--save', save, '--test_every', 2, '--n_threads', 0, *extra]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """2 epochs on 2 ranks (batch 1 each), the same in one process (batch 2), and
    1 epoch on 2 ranks resumed to 2 epochs."""
    from jittor_sbvsr.data.synthetic import make_demo_videos
    root = tmp_path_factory.mktemp('mpi')
    clips = root / 'clips'
    make_demo_videos(clips, n_videos=2, n_frames=5)
    exp, dumps = root / 'exp', root / 'dumps'
    dumps.mkdir()
    mpi = run(mpirun(2, DRIVER, dumps, *demo_args(clips, exp, 'mpi', '--epochs', 2, '--batch_size', 1)))
    single = run([sys.executable, MAIN, *map(str, demo_args(clips, exp, 'single', '--epochs', 2,
                                                            '--batch_size', 2))])
    part = run(mpirun(2, MAIN, *demo_args(clips, exp, 'part', '--epochs', 1, '--batch_size', 1)))
    if part.returncode == 0:
        shutil.copy(exp / 'part' / 'model' / 'model_latest.pkl', root / 'epoch1.pkl')
    resumed = run(mpirun(2, MAIN, *demo_args(clips, exp, 'part', '--epochs', 2, '--batch_size', 1,
                                             '--resume')))
    # 3 windows per epoch: the second global batch has one sample, rank 1 none (weight 0)
    clips3 = root / 'clips3'
    make_demo_videos(clips3, n_videos=3, n_frames=5)
    odd = [run(mpirun(2, MAIN, *demo_args(clips3, exp, 'odd_mpi', '--epochs', 1, '--batch_size', 1,
                                         '--test_every', 1, '--dir_data_test', ''))),
           run([sys.executable, MAIN, *map(str, demo_args(clips3, exp, 'odd_single', '--epochs', 1,
                                                          '--batch_size', 2, '--test_every', 1,
                                                          '--dir_data_test', ''))])]
    return SimpleNamespace(root=root, clips=clips, exp=exp, dumps=dumps, mpi=mpi, single=single, part=part,
                           resumed=resumed, odd=odd)


def test_ranks_end_with_identical_weights(runs):
    assert_ok(runs.mpi)
    r0 = np.load(runs.dumps / 'rank0.npz')
    r1 = np.load(runs.dumps / 'rank1.npz')
    assert sorted(r0.files) == sorted(r1.files)
    assert [k for k in r0.files if not np.array_equal(r0[k], r1[k])] == []
    saved = load_state(runs.exp / 'mpi' / 'model' / 'model_latest.pkl')
    assert [k for k in saved if not np.array_equal(saved[k], r0[k])] == []


def test_two_ranks_equal_one_process_with_the_global_batch(runs):
    assert_ok(runs.mpi)
    assert_ok(runs.single)
    a = load_state(runs.exp / 'mpi' / 'model' / 'model_latest.pkl')
    b = load_state(runs.exp / 'single' / 'model' / 'model_latest.pkl')
    assert list(a) == list(b)
    diff = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a])
    print(f'max |w_mpi - w_single| = {diff.max():.3g}, beyond 1e-7: {np.mean(diff > 1e-7):.3g}')
    assert diff.max() <= WEIGHT_ATOL
    assert np.mean(diff > 1e-7) <= WEIGHT_FRACTION_BEYOND_1E7
    # the second epoch alone (2 steps) moved the weights far more than that
    assert_ok(runs.part)
    e1 = load_state(runs.root / 'epoch1.pkl')
    assert max(float(np.max(np.abs(a[k] - e1[k]))) for k in a) > 10 * WEIGHT_ATOL
    ha = json.loads((runs.exp / 'mpi' / 'history.json').read_text(encoding='utf-8'))
    hb = json.loads((runs.exp / 'single' / 'history.json').read_text(encoding='utf-8'))
    assert ha['epoch'] == hb['epoch'] == [1, 2]
    for k in ('total', 'recons_down_l1', 'cycle_l1', 'psnr', 'cycle_psnr', 'down_psnr'):
        np.testing.assert_allclose(ha[k], hb[k], rtol=LOSS_RTOL, err_msg=k)


def _max_diff(exp, a, b):
    wa = load_state(exp / a / 'model' / 'model_latest.pkl')
    wb = load_state(exp / b / 'model' / 'model_latest.pkl')
    return max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)


def test_a_rank_without_samples_in_the_last_batch_changes_nothing(runs):
    """3 samples on 2 ranks x batch 1: batches of 2 and 1, the lone sample weighted as one process does."""
    for r in runs.odd:
        assert_ok(r)
    assert '3 samples per epoch, 2 batches' in runs.odd[0].stdout
    assert _max_diff(runs.exp, 'odd_mpi', 'odd_single') <= WEIGHT_ATOL
    ha = json.loads((runs.exp / 'odd_mpi' / 'history.json').read_text(encoding='utf-8'))
    hb = json.loads((runs.exp / 'odd_single' / 'history.json').read_text(encoding='utf-8'))
    np.testing.assert_allclose(ha['total'], hb['total'], rtol=LOSS_RTOL)


def test_only_rank_0_logs_and_reports_the_effective_batch(runs):
    assert_ok(runs.mpi)
    out, err = runs.mpi.stdout, runs.mpi.stderr
    assert out.count('Training epochs') == 1, out
    assert_ok(runs.part)  # main.py itself under mpirun: its header once, too
    assert runs.part.stdout.count('Self-Blind-VSR training') == 1, runs.part.stdout
    assert 'Warning' not in err, err
    assert 'x 2 MPI ranks' in out
    assert 'effective batch 2 = 1 per rank x 2 rank(s) x 1 accumulated' in out
    assert out.count('Epoch 2 loss') == 1
    # one final progress line per epoch and evaluation, not one per rank
    assert sum(bool(re.match(r'epoch 1: \d+/\d+ batches in ', line)) for line in err.splitlines()) == 1, err
    assert sum(bool(re.match(r'evaluation: \d+/\d+ windows in ', line)) for line in err.splitlines()) == 2, err
    log = (runs.exp / 'mpi' / 'log.txt').read_text(encoding='utf-8')
    assert log.count('Training epochs') == 1
    assert not [p for p in (runs.exp / 'mpi').rglob('*') if '.tmp' in p.name]


def test_resume_under_mpi_repeats_the_uninterrupted_run(runs):
    assert_ok(runs.part)
    assert_ok(runs.resumed)
    assert 'Resuming from' in runs.resumed.stdout
    a = load_state(runs.exp / 'mpi' / 'model' / 'model_latest.pkl')
    b = load_state(runs.exp / 'part' / 'model' / 'model_latest.pkl')
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    ha = json.loads((runs.exp / 'mpi' / 'history.json').read_text(encoding='utf-8'))
    hb = json.loads((runs.exp / 'part' / 'history.json').read_text(encoding='utf-8'))
    assert ha == hb


def test_resuming_on_another_number_of_ranks_warns(runs, tmp_path):
    assert_ok(runs.resumed)
    shutil.copytree(runs.exp / 'part', tmp_path / 'exp' / 'part')
    r = run([sys.executable, MAIN, *map(str, demo_args(runs.clips, tmp_path / 'exp', 'part', '--epochs', 2,
                                                       '--batch_size', 1, '--resume'))])
    assert_ok(r)
    assert 'MPI ranks 2 -> 1' in r.stdout and 'Nothing to do' in r.stdout


def _ranks(mpirun_pid, n, deadline):
    """The pids of mpirun's n rank processes (its children)."""
    while time.time() < deadline:
        out = run_child(['pgrep', '-P', str(mpirun_pid)], capture_output=True, text=True, encoding='utf-8').stdout
        pids = [int(p) for p in out.split()]
        if len(pids) >= n:
            return pids
        time.sleep(0.2)
    raise AssertionError('the ranks did not start')


def _stop_one_rank(runs, tmp_path, sig, timeout):
    """Start a long run, wait for epoch 2, send ``sig`` to one rank; returns (rc, stderr, seconds)."""
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    exp = tmp_path / 'exp'
    err_path = tmp_path / 'stderr'
    with open(tmp_path / 'stdout', 'w', encoding='utf-8') as out, open(err_path, 'w', encoding='utf-8') as err:
        p = subprocess.Popen(mpirun(2, MAIN, *demo_args(runs.clips, exp, 'k', '--epochs', 100, '--batch_size', 1,
                                                        '--dist_timeout', timeout)),
                             stdout=out, stderr=err, cwd=ROOT, env=child_env(ENV), start_new_session=True)
        log = exp / 'k' / 'log.txt'
        t0 = time.time()
        try:
            victim = _ranks(p.pid, 2, t0 + 120)[-1]
            while not (log.exists() and '[Epoch 2]' in log.read_text(encoding='utf-8')):
                assert p.poll() is None, err_path.read_text(encoding='utf-8')[-3000:]
                assert time.time() - t0 < 600, 'training did not reach epoch 2'
                time.sleep(0.2)
            os.kill(victim, sig)
            t1 = time.time()
            rc = p.wait(timeout=timeout + 120)
            took = time.time() - t1
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    left = run_child(['pgrep', '-f', str(exp)], capture_output=True, text=True, encoding='utf-8').stdout.split()
    assert not left, 'ranks left running'
    return rc, err_path.read_text(encoding='utf-8'), took


@posix_only('Open MPI; SIGKILL to one rank')
def test_a_killed_rank_stops_the_group(runs, tmp_path):
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    assert_ok(runs.mpi)
    rc, err, took = _stop_one_rank(runs, tmp_path, signal.SIGKILL, timeout=30)
    assert rc != 0
    assert 'signal 9' in err or 'Killed' in err, err[-3000:]
    assert took < 60


@posix_only('Open MPI; SIGSTOP to one rank')
def test_a_hung_rank_makes_the_others_exit_with_a_clear_error(runs, tmp_path):
    """SIGSTOP: the rank is alive but silent, so mpirun sees nothing; the watchdog ends the wait."""
    if sys.platform == 'win32':  # skipped there (posix_only); read as Windows, the rest is unreachable
        return
    assert_ok(runs.mpi)
    rc, err, took = _stop_one_rank(runs, tmp_path, signal.SIGSTOP, timeout=30)
    assert rc != 0
    lines = [line for line in err.splitlines() if 'no progress for' in line]
    assert lines, err[-3000:]
    for line in lines:
        assert re.match(r'error \(rank [01]/2\): no progress for \d+ s during [^;]+; '
                        r'another rank has probably died or hangs', line), line
    assert took < 30 + 60


def test_mpirun_without_mpicc_is_one_line_error(tmp_path):
    env = dict(ENV, OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_RANK='0', mpicc_path=str(tmp_path / 'no-mpicc'))
    r = run_child([sys.executable, MAIN, '--template', 'Self_Blind_VSR_Demo', '--cpu',
                        '--experiment_dir', tmp_path / 'exp'], capture_output=True, text=True, cwd=ROOT,
                  env=env, timeout=300, encoding='utf-8')
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith('error (rank 0/2): started by mpirun, but Open MPI')
    assert not (tmp_path / 'exp').exists()


def test_text_gathered_and_broadcast_over_the_ranks(tmp_path):
    """dist.gather_text (the writer's notes of videos other ranks encoded reach rank 0's log).
    Each rank writes its own file: mpirun forwards the ranks' stdout into one stream, where
    two lines can run together."""
    code = ('import json, sys; sys.path.insert(0, sys.argv[1]); from jittor_sbvsr import runtime; '
            'runtime.prepare(); from jittor_sbvsr import dist; r = dist.rank(); '
            "out = [dist.gather_text(['a ü\\n', ''][r]), dist.gather_text(''), "
            "dist.broadcast_text(['x', 'y'][r])]; "
            "open(sys.argv[2] + '/%d.json' % r, 'w', encoding='utf-8').write(json.dumps(out))")
    r = run(mpirun(2, '-c', code, ROOT, tmp_path), timeout=300)
    assert_ok(r)
    got = [json.loads((tmp_path / f'{k}.json').read_text(encoding='utf-8')) for k in range(2)]
    assert got == [[['a ü\n', ''], ['', ''], 'x']] * 2
