"""Training: short demo runs on synthetic clips (CPU), resume, fine-tuning, accumulation, bad input.

Options are tested in test_options.py, the curves in test_plots.py, the
loader's batch weights in test_loader.py. One file of end-to-end runs that
share their module-scoped demo runs (hence its length).

CLI runs are subprocesses of main.py with a tiny configuration (the demo
template: n_feat 16, 1 + 2 residual blocks, 24x24 LR patches, batch 2).
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import child_env, run_child, tiny_train_args

import jittor_sbvsr  # noqa: F401  (configures Jittor)
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.weights.checkpoint import load_state, save_state_atomic

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / 'main.py')


def run_main(*args, timeout=900):
    r = run_child([sys.executable, MAIN, *map(str, args)], capture_output=True, text=True,
                  cwd=ROOT, timeout=timeout, encoding='utf-8')
    return r


def assert_one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert len(err) == 1, r.stderr
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def demo_args(demo, exp, save, *extra):
    clips = demo / 'clips'
    return ['--template', 'Self_Blind_VSR_Demo', '--cpu', '--dir_data', clips, '--dir_data_test', clips,
            '--experiment_dir', exp, '--save', save, '--test_every', 2, '--n_threads', 0, *extra]


@pytest.fixture(scope='module')
def runs(demo):
    """An uninterrupted 2-epoch run, and a 1-epoch run resumed to 2 epochs."""
    exp = demo / 'exp'
    full = run_main(*demo_args(demo, exp, 'full', '--epochs', 2))
    part = run_main(*demo_args(demo, exp, 'part', '--epochs', 1))
    part_state = (exp / 'part' / 'training_state.npz').read_bytes()
    resumed = run_main(*demo_args(demo, exp, 'part', '--epochs', 2, '--resume'))
    return SimpleNamespace(exp=exp, full=full, part=part, resumed=resumed, part_state=part_state)


def test_demo_run_writes_checkpoints_and_learns(runs, demo):
    assert runs.full.returncode == 0, runs.full.stderr[-3000:]
    d = runs.exp / 'full'
    for name in ('model/model_latest.pkl', 'model/model_best.pkl', 'training_state.npz', 'log.txt',
                 'config.txt', 'history.json', 'loss_total.png', 'loss_kernel_center.png', 'psnr.png',
                 'cycle_psnr.png', 'down_psnr.png'):
        assert (d / name).is_file(), name
    assert not [p for p in d.rglob('*') if '.tmp' in p.name]
    h = json.loads((d / 'history.json').read_text(encoding='utf-8'))
    assert h['epoch'] == [1, 2]
    assert all(np.isfinite(h[k]).all() for k in ('total', 'psnr', 'cycle_psnr', 'down_psnr'))
    assert h['lr'] == [1e-4, 1e-4]
    log = (d / 'log.txt').read_text(encoding='utf-8')
    assert 'Epoch 2 loss' in log and 'PSNR' in log
    # kernel images exist and are finite images
    from PIL import Image
    kern = sorted((d / 'result').rglob('*_est_kernel.png'))
    assert kern and np.asarray(Image.open(kern[0])).shape == (13, 13, 3)
    # the weights load back strictly into the demo architecture
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.weights.checkpoint import load_into_module
    load_into_module(PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2),
                     load_state(d / 'model' / 'model_latest.pkl'), 'model_latest.pkl')
    # it learns: on every batch it trained on (both epochs), the loss of its last weights is
    # below that of its initial ones (same seed), not just on one batch that chance could lower
    import jittor as jt
    from jittor_sbvsr.cli.train_options import parse_args
    from jittor_sbvsr.trainer.trainer import Trainer
    t = Trainer(parse_args([str(a) for a in demo_args(demo, runs.exp, 'full', '--epochs', 2)]))
    batches = []
    for epoch in (0, 1):
        t.loader.set_epoch(epoch)
        batches += list(t.loader)
    t.close()

    def losses():
        with jt.no_grad():
            return [t.loss_fn(t.model({'x': jt.array(b['lr']), 'mode': 'train'})[0])[0].item() for b in batches]
    before = losses()
    load_into_module(t.model, load_state(d / 'model' / 'model_latest.pkl'), 'model_latest.pkl')
    after = losses()
    assert len(batches) == 4 and all(a < b for a, b in zip(after, before)), (before, after)


def test_resume_is_bit_exact(runs):
    assert runs.part.returncode == 0, runs.part.stderr[-3000:]
    assert runs.resumed.returncode == 0, runs.resumed.stderr[-3000:]
    assert 'Resuming from' in runs.resumed.stdout
    a = load_state(runs.exp / 'full' / 'model' / 'model_latest.pkl')
    b = load_state(runs.exp / 'part' / 'model' / 'model_latest.pkl')
    assert list(a) == list(b)
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, diff[:5]
    ha = json.loads((runs.exp / 'full' / 'history.json').read_text(encoding='utf-8'))
    hb = json.loads((runs.exp / 'part' / 'history.json').read_text(encoding='utf-8'))
    assert ha == hb
    from jittor_sbvsr.trainer.state import load_training_state
    ma, _, oa = load_training_state(runs.exp / 'full' / 'training_state.npz')
    mb, _, ob = load_training_state(runs.exp / 'part' / 'training_state.npz')
    assert ma['epoch'] == mb['epoch'] == 2 and oa['steps'] == ob['steps']
    for ga, gb in zip(oa['groups'], ob['groups']):
        assert all(np.array_equal(x, y) for x, y in zip(ga['m'] + ga['v'], gb['m'] + gb['v']))


def test_corrupt_state_on_resume_changes_nothing(runs, tmp_path):
    exp = tmp_path / 'exp'
    shutil.copytree(runs.exp / 'full', exp / 'broken')
    state = exp / 'broken' / 'training_state.npz'
    state.write_bytes(state.read_bytes()[:5000])
    before = snapshot(exp)
    r = run_main(*demo_args(runs.exp.parent, exp, 'broken', '--epochs', 3, '--resume'))
    assert_one_line_error(r, 'training_state.npz', 'corrupt')
    assert snapshot(exp) == before
    # nothing to resume from
    r = run_main(*demo_args(runs.exp.parent, exp, 'nothing_here', '--epochs', 3, '--resume'))
    assert_one_line_error(r, 'no training state')
    assert snapshot(exp) == before


def test_finetune_on_lr_only_folder(demo, tmp_path):
    from jittor_sbvsr.models import PWC_Recons
    import jittor as jt
    jt.set_global_seed(5)
    start = {k: v.numpy() for k, v in PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2).state_dict().items()}
    pre = tmp_path / 'start.pkl'
    save_state_atomic(start, pre)
    r = run_main('--template', 'Self_Blind_VSR_Finetune', '--cpu', '--dir_data', demo / 'clips' / 'LR_blurdown_x4',
                 '--pre_train', pre, '--experiment_dir', tmp_path / 'exp', '--save', 'ft', '--n_feat', 16,
                 '--extra_RBS', 1, '--recons_RBS', 2, '--patch_size', 24, '--batch_size', 2, '--epochs', 1,
                 '--test_every', 1, '--n_threads', 0, '--lr', 1e-4)
    assert r.returncode == 0, r.stderr[-3000:]
    out = load_state(tmp_path / 'exp' / 'ft' / 'model' / 'model_latest.pkl')
    assert set(out) == set(start)
    moved = [k for k in start if not np.array_equal(out[k], start[k])]
    # every tensor outside the flow net was trained; the flow net too (lr 1e-6), except where
    # a tensor's gradient is exactly 0 on 6x6 frames (e.g. the coarsest pyramid level)
    assert set(k for k in start if not k.startswith('flow_net.')) <= set(moved)
    assert len(moved) >= 0.9 * len(start)
    assert not (tmp_path / 'exp' / 'ft' / 'model' / 'model_best.pkl').exists()  # no test set, no "best"
    assert 'no test set' in r.stdout


def test_ctrl_c_stops_cleanly(demo, tmp_path):
    """SIGINT during epoch 2: exit 130, no temporary file left, epoch 1 stays resumable."""
    exp = tmp_path / 'exp'
    out = open(tmp_path / 'stdout', 'w', encoding='utf-8')
    err = open(tmp_path / 'stderr', 'w', encoding='utf-8')
    p = subprocess.Popen([sys.executable, MAIN, *map(str, demo_args(demo, exp, 'sig', '--epochs', 3))],
                         stdout=out, stderr=err, cwd=ROOT, env=child_env())
    log = exp / 'sig' / 'log.txt'
    t0 = time.time()
    try:
        while not (log.exists() and '[Epoch 2]' in log.read_text(encoding='utf-8')):
            assert p.poll() is None, (tmp_path / 'stderr').read_text(encoding='utf-8')[-3000:]
            assert time.time() - t0 < 600
            time.sleep(0.2)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
        out.close()
        err.close()
    stderr = (tmp_path / 'stderr').read_text(encoding='utf-8')
    assert rc == 130, stderr[-3000:]
    assert 'Traceback' not in stderr and 'interrupted' in stderr
    assert not [q for q in exp.rglob('*') if '.tmp' in q.name]
    from jittor_sbvsr.trainer.state import load_training_state
    meta, _, _ = load_training_state(exp / 'sig' / 'training_state.npz')
    assert meta['epoch'] in (1, 2)  # 2 only if the signal came while epoch 2 was being saved
    assert 'continue with --resume' in log.read_text(encoding='utf-8')


# ---------------------------------------------------------------- bad input

def _video(folder, n, size=(128, 192)):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(n)
    for t in range(n):
        Image.fromarray(rng.randint(0, 255, size + (3,), dtype=np.uint8)).save(folder / f'{t:08d}.png')


@pytest.fixture(scope='module')
def protected(runs, tmp_path_factory):
    """An experiment whose files no failed run may touch."""
    exp = tmp_path_factory.mktemp('protected')
    shutil.copytree(runs.exp / 'part', exp / 'run')
    return exp


@pytest.mark.parametrize('case', ['missing', 'empty', 'short', 'patch', 'unreadable', 'unreadable_late',
                                  'template', 'bad_flag'])
def test_bad_input_one_line_error(case, demo, protected, tmp_path):
    bad = tmp_path / 'data'
    extra = []
    needles = []
    if case == 'missing':
        bad = tmp_path / 'does_not_exist'
        needles = ['does_not_exist', 'does not exist']
    elif case == 'empty':
        (bad / 'HR').mkdir(parents=True)
        needles = ['HR']
    elif case == 'short':
        _video(bad / 'HR' / 'v0', 3)
        needles = ['3 frame', '5']
    elif case == 'patch':
        _video(bad / 'HR' / 'v0', 5, size=(64, 64))
        needles = ['patch_size']
    elif case == 'unreadable':
        _video(bad / 'HR' / 'v0', 5)
        (bad / 'HR' / 'v0' / '00000000.png').write_bytes(b'not a png at all')
        needles = ['00000000.png']
    elif case == 'unreadable_late':
        _video(bad / 'HR' / 'v0', 5)
        (bad / 'HR' / 'v0' / '00000003.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
        needles = ['00000003.png']
    before = snapshot(protected)
    if case == 'template':
        r = run_main('--template', 'No_Such_Template', '--experiment_dir', protected, '--save', 'run')
        line = assert_one_line_error(r, 'No_Such_Template', 'Self_Blind_VSR_Gaussian', 'Self_Blind_VSR_Demo')
        assert r.returncode == 2
    elif case == 'bad_flag':
        r = run_main('--template', 'Self_Blind_VSR_Demo', '--batch_size', 'zero', '--experiment_dir', protected)
        assert_one_line_error(r, 'batch_size')
    else:
        # resume the protected run with broken training data: nothing may change
        args = demo_args(demo, protected, 'run', '--epochs', 3, '--resume', '--data_train',
                         'REDS_BLURDOWN_GAUSSIAN', *extra)
        args[args.index('--dir_data') + 1] = bad
        r = run_main(*args)
        line = assert_one_line_error(r, *needles)
        assert r.returncode == 2, line
    if case == 'unreadable_late':
        # the frame is only read during the epoch: the log and config.txt record the attempt,
        # the checkpoints stay as they were
        for name in ('run/log.txt', 'run/config.txt'):
            before.pop(name)
        after = snapshot(protected)
        assert not [k for k in set(after) - set(before) if not k.endswith(('log.txt', 'config.txt'))]
        assert {k: after[k] for k in before} == before
    else:
        assert snapshot(protected) == before


# ---------------------------------------------------------------- in-process

def test_accumulated_update_equals_big_batch(demo):
    """batch 1 x accumulate 4 == batch 4: same samples, same gradient and Adam update up to rounding."""
    from jittor_sbvsr.trainer.trainer import Trainer
    results = []
    for bs, acc in ((4, 1), (1, 4)):
        t = Trainer(tiny_train_args(demo, batch_size=bs, accumulate=acc, test_every=2))
        assert len(t.train_set) == 4
        grads = []
        orig = t.optimizer.step

        def step(loss=None, retain_graph=False, _t=t, _orig=orig):
            grads.append([g.numpy().copy() for pg in _t.optimizer.param_groups for g in pg['grads']])
            return _orig(loss, retain_graph)
        t.optimizer.step = step
        before = [p.numpy().copy() for pg in t.optimizer.param_groups for p in pg['params']]
        lrs = [pg['lr'] for pg in t.optimizer.param_groups for _ in pg['params']]
        t.train_epoch(1)
        assert t.optimizer.steps == 1 and len(grads) == 1
        after = [p.numpy().copy() for pg in t.optimizer.param_groups for p in pg['params']]
        results.append((grads[0], before, after, lrs))
        t.close()
    (g_big, b_big, p_big, lrs), (g_acc, b_acc, p_acc, _) = results
    assert all(np.array_equal(a, b) for a, b in zip(b_big, b_acc))
    num = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(g_big, g_acc)))
    den = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in g_big))
    assert num <= 1e-5 * den
    eps = 1e-8
    n_close = n_all = 0
    for ga, gb, pa, pb, lr in zip(g_big, g_acc, p_big, p_acc, lrs):
        # first Adam step: p -= lr * g / (|g| + eps), whose slope in g is at most lr / eps
        bound = lr * np.abs(ga.astype(np.float64) - gb) / eps + 2 * np.spacing(np.maximum(np.abs(pa), np.abs(pb)))
        assert np.all(np.abs(pa.astype(np.float64) - pb) <= bound)
        n_close += int(np.sum(np.abs(pa.astype(np.float64) - pb) <= 1e-6 * lr + np.spacing(np.abs(pa))))
        n_all += pa.size
    assert n_close >= 0.999 * n_all


def test_out_of_memory_is_one_hint(demo, monkeypatch, tmp_path):
    from jittor_sbvsr.trainer.trainer import Trainer
    t = Trainer(tiny_train_args(demo, experiment_dir=str(tmp_path), save='oom'))

    def boom(epoch):
        raise RuntimeError('[f 1125] cudaErrorMemoryAllocation: out of memory')
    monkeypatch.setattr(t, 'train_epoch', boom)
    with pytest.raises(UserError) as e:
        t.train()
    t.close()
    msg = str(e.value)
    assert '\n' not in msg and '--batch_size' in msg and '--accumulate' in msg and '--patch_size' in msg
    assert not (tmp_path / 'oom' / 'training_state.npz').exists()


def test_pwc_weights_pre_train_and_test_only(demo, tmp_path):
    """network-default.pkl from --pretrain_models_dir (keys with or without the flow_net prefix),
    --pre_train for the whole model, and --test_only evaluation."""
    import jittor as jt
    from jittor_sbvsr.weights.checkpoint import FLOW_PREFIX
    from jittor_sbvsr.models import PWC_Recons
    from jittor_sbvsr.trainer.trainer import Trainer
    jt.set_global_seed(7)
    other = {k: v.numpy() for k, v in PWC_Recons(n_feat=8, extra_RBS=1, recons_RBS=1).state_dict().items()}
    flow = {k[len(FLOW_PREFIX):]: v for k, v in other.items() if k.startswith(FLOW_PREFIX)}
    for prefixed in (False, True):
        pdir = tmp_path / f'pwc{int(prefixed)}'
        pdir.mkdir()
        save_state_atomic({(FLOW_PREFIX + k if prefixed else k): v for k, v in flow.items()},
                          pdir / 'network-default.pkl')
        t = Trainer(tiny_train_args(demo, pretrain_models_dir=str(pdir)))
        got = {k: v.numpy() for k, v in t.model.flow_net.moduleNetwork.state_dict().items()}
        t.close()
        assert all(np.array_equal(got[k], flow[k]) for k in flow)
        assert any('Loaded the PWC-Net weights' in m for m in t.messages)
    # a wrong file there is one error naming it
    bad = tmp_path / 'pwc_bad'
    bad.mkdir()
    save_state_atomic({'moduleExtractor.moduleOne.0.weight': np.zeros((1, 1), np.float32)},
                      bad / 'network-default.pkl')
    with pytest.raises(UserError, match='network-default.pkl'):
        Trainer(tiny_train_args(demo, pretrain_models_dir=str(bad)))
    # --pre_train loads everything, --test_only evaluates it without training
    pre = tmp_path / 'model.pkl'
    save_state_atomic(other, pre)
    t = Trainer(tiny_train_args(demo, pre_train=str(pre), test_only=True, dir_data_test=str(demo / 'clips'),
                           experiment_dir=str(tmp_path / 'exp'), save='only'))
    got = {k: v.numpy() for k, v in t.model.state_dict().items()}
    assert all(np.array_equal(got[k], other[k]) for k in other)
    try:
        r = t.train()
    finally:
        t.close()
    assert set(r) == {'psnr', 'cycle_psnr', 'down_psnr'} and all(np.isfinite(list(r.values())))
    assert not (tmp_path / 'exp' / 'only' / 'training_state.npz').exists()
