"""Memory bounded by itself: --max_memory chooses the inference tile (and retries smaller once
after an out-of-memory error) and, with --accumulate auto, the training micro-batches."""
import sys

import numpy as np
import pytest

from conftest import ROOT, psnr01, run_child, tiny_train_args

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.cli.infer import build_parser as infer_parser
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.infer.engine import VideoSR
from jittor_sbvsr.infer.memory_plan import choose_tile, min_tile, window_bytes
from jittor_sbvsr.cli.train_options import parse_args as train_args
from jittor_sbvsr.trainer.micro import STEP_FIXED_BYTES, sample_bytes, split_batch
from jittor_sbvsr.utils import memory


# ------------------------------------------------------------ sizes ----

@pytest.mark.parametrize('text,n', [('2G', 2 * 2 ** 30), ('512M', 512 * 2 ** 20), ('1.5g', 3 * 2 ** 29),
                                    ('64MiB', 64 * 2 ** 20), ('2 GB', 2 * 2 ** 30), ('1000', 1000), ('8K', 8192)])
def test_sizes(text, n):
    assert memory.parse_size(text) == n


@pytest.mark.parametrize('text', ['', 'abc', '2X', '-1G', '0', '0M', '1.2.3G', 'G'])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        memory.parse_size(text)


@pytest.mark.parametrize('flag', [['--max_memory', 'lots'], ['--max_memory', '0'], ['--max_memory', '-2G']])
def test_bad_max_memory_is_one_error_line(tmp_path, flag):
    for script in ('inference.py', 'main.py'):
        r = run_child([sys.executable, str(ROOT / script), *flag], capture_output=True, encoding='utf-8',
                      cwd=tmp_path, timeout=600)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:'), r.stderr[-2000:]
        assert '--max_memory' in lines[0] and 'Traceback' not in r.stderr


def test_flags_parse():
    assert infer_parser().parse_args(['--max_memory', '2G']).max_memory == 2 * 2 ** 30
    assert infer_parser().parse_args([]).max_memory is None
    a = train_args(['--accumulate', 'auto', '--max_memory', '512M'])
    assert (a.accumulate, a.max_memory) == ('auto', 512 * 2 ** 20)
    assert train_args(['--accumulate', '3']).accumulate == 3
    with pytest.raises(UserError, match='--accumulate'):
        train_args(['--accumulate', 'some'])


def test_available_memory(tmp_path):
    f = tmp_path / 'meminfo'
    f.write_text('MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:  800 kB\n', encoding='utf-8')
    assert memory._meminfo(str(f)) == (800 * 1024, 1000 * 1024)
    assert memory._meminfo(str(tmp_path / 'none')) is None
    free = memory.available_bytes('cpu')
    if sys.platform.startswith('linux'):  # /proc/meminfo is there: memory must be read
        assert free is not None
    if free is None:
        pytest.skip(f'the available memory cannot be read on {sys.platform}')
    assert free > 0
    b = memory.default_budget('cpu')
    assert 64 * 2 ** 20 <= b <= free
    assert memory.default_budget('cpu', processes=2) <= b


def test_out_of_memory_errors_are_recognised():
    assert memory.is_out_of_memory(MemoryError())
    assert memory.is_out_of_memory(RuntimeError('[f] Unable to alloc cuda device memory for size 1'))
    assert memory.is_out_of_memory(RuntimeError('GPU memory is overflow, please reduce your batch_size'))
    assert not memory.is_out_of_memory(RuntimeError('shape mismatch'))


# ------------------------------------------------------------ tile choice ----

def test_tile_choice_follows_the_budget():
    h, w = 540, 960
    full = window_bytes(h, w, 0)
    assert choose_tile(h, w, full) == (0, True) and choose_tile(h, w, 2 ** 50) == (0, True)
    last = None
    lo = window_bytes(h, w, min_tile(16), keep_features=False)
    for budget in np.linspace(lo, full - 1, 12):
        tile, keep = choose_tile(h, w, budget)
        assert tile >= min_tile(16) and window_bytes(h, w, tile, keep_features=keep) <= budget
        # more memory: the features kept, larger tiles
        assert last is None or (keep, tile) >= last
        last = (keep, tile)
    assert last[0] and choose_tile(h, w, lo)[1] is False
    assert choose_tile(h, w, 1) == (min_tile(16), False)  # nothing fits: the smallest tile
    assert window_bytes(h, w, 128) < window_bytes(h, w, 256) < full
    assert window_bytes(h, w, 128, keep_features=False) < window_bytes(h, w, 128)
    # the measured runs (bench/RESULTS.md) lie below the model: 540x960 in 192-px tiles, whole
    assert window_bytes(540, 960, 192) > 2413 * 2 ** 20 and window_bytes(540, 960) > 8937 * 2 ** 20
    assert window_bytes(180, 320) > 1243 * 2 ** 20 and window_bytes(180, 320, 64) > 428 * 2 ** 20


@pytest.fixture(scope='module')
def untiled(recipe_net, clip):
    frames, windows = clip
    engine = VideoSR(recipe_net, max_memory=0)  # 0: no budget, whole frames as before
    out = list(engine.windows(frames, windows))
    assert engine.plan == (32, 48, 0)
    return out


def test_a_large_budget_is_exactly_untiled(recipe_net, clip, untiled):
    frames, windows = clip
    for budget in (None, 2 ** 50):  # None: the machine's default budget
        engine = VideoSR(recipe_net, max_memory=budget)
        out = list(engine.windows(frames, windows))
        assert engine.plan == (32, 48, 0)
        for (_, r1, k1, _), (_, r2, k2, _) in zip(untiled, out):
            assert np.array_equal(r1, r2) and np.array_equal(k1, k2)


def test_a_tiny_budget_tiles(recipe_net, clip, untiled):
    frames, windows = clip
    lines = []
    engine = VideoSR(recipe_net, overlap=8, max_memory=1, warn=lines.append)
    out = list(engine.windows(frames, windows))
    assert engine.plan == (32, 48, min_tile(8)) and len(engine.tiles(32, 48, engine.plan[2])) == 2
    assert len(lines) == 2 and lines[0].startswith('note:') and '32x32 tiles, frame features recomputed' \
        in lines[0]
    # no budget this small holds even the kernel and flows on whole frames: said, with what helps
    assert lines[1].startswith('warning:') and 'tiles do not shrink them' in lines[1]
    fixed = list(VideoSR(recipe_net, tile=32, overlap=8, max_memory=1).windows(frames, windows))
    for (_, r1, k1, _), (_, r2, k2, _), (_, r3, _, _) in zip(untiled, out, fixed):
        assert not np.array_equal(r1, r2) and np.array_equal(k1, k2)
        assert psnr01(r2, r1) >= 45.0  # tests/test_tiling.py's tolerance
        assert np.array_equal(r2, r3)  # recomputed features: the bits of kept ones
    # --tile overrides the budget
    engine = VideoSR(recipe_net, tile=48, max_memory=1)
    assert engine.tile_for(32, 48) == (48, True)


def _fail_once(monkeypatch, engine, error, times=1):
    calls = {'n': 0}
    real = engine.model.recons_forward

    def recons_forward(*a, **k):
        calls['n'] += 1
        if calls['n'] <= times:
            raise error
        return real(*a, **k)
    monkeypatch.setattr(engine.model, 'recons_forward', recons_forward)
    return calls


def test_out_of_memory_retries_smaller_once(recipe_net, clip, untiled, monkeypatch):
    frames, windows = clip
    lines = []
    engine = VideoSR(recipe_net, overlap=8, max_memory=0, warn=lines.append)
    _fail_once(monkeypatch, engine, RuntimeError('[f 1205] cudaErrorMemoryAllocation: out of memory'))
    out = list(engine.windows(frames, windows))
    assert len(out) == 2 and engine.plan == (32, 48, 32)  # half of the 48-px side (the floor: 32)
    assert len(lines) == 1 and lines[0].startswith('warning: window 0 ran out of memory in whole frames') \
        and 'in 32x32 tiles' in lines[0] and '\n' not in lines[0]
    for (_, r1, _, _), (_, r2, _, _) in zip(untiled, out):
        assert psnr01(r2, r1) >= 45.0


def test_out_of_memory_twice_is_one_error_line(recipe_net, clip, monkeypatch):
    frames, windows = clip
    engine = VideoSR(recipe_net, overlap=8, max_memory=0, warn=lambda line: None)
    _fail_once(monkeypatch, engine, MemoryError(), times=2)
    with pytest.raises(UserError) as e:
        list(engine.windows(frames, windows))
    assert 'out of memory' in str(e.value) and '--max_memory' in str(e.value) and '\n' not in str(e.value)


def test_other_errors_are_not_retried(recipe_net, clip, monkeypatch):
    frames, windows = clip
    engine = VideoSR(recipe_net, max_memory=0, warn=lambda line: pytest.fail(line))
    _fail_once(monkeypatch, engine, RuntimeError('something else'))
    with pytest.raises(RuntimeError, match='something else'):
        list(engine.windows(frames, windows))


# ------------------------------------------------------------ training ----

def test_split_batch():
    assert split_batch(8, 10 ** 12, 100, fixed=0) == (8, 1)
    assert split_batch(8, 400, 100, fixed=0) == (4, 2)
    assert split_batch(8, 399, 100, fixed=0) == (2, 4)  # 3 does not divide 8
    assert split_batch(6, 300, 100, fixed=0) == (3, 2)
    assert split_batch(8, 50, 100, fixed=0) == (1, 8)  # not even one: one at a time
    assert sample_bytes(64) * 4 == pytest.approx(sample_bytes(128), rel=1e-6)


def _trained(demo, **over):
    """Parameters after one epoch (2 updates of 2 samples: --test_every 2), the loader's plan, the notes."""
    from jittor_sbvsr.trainer.trainer import Trainer
    t = Trainer(tiny_train_args(demo, **over))
    t.train_epoch(1)
    params = [p.numpy().copy() for p in t.model.parameters()]
    plan = (t.loader.batch_size, t.loader.accumulate, t.effective_batch(), t.optimizer.steps)
    t.close()
    return params, plan, t.messages


def test_accumulate_auto_makes_the_updates_of_explicit_accumulation(demo):
    """--batch_size 2 --accumulate auto under a small budget runs what --batch_size 1 --accumulate 2
    runs, bit for bit; under a large one what --batch_size 2 runs."""
    small = STEP_FIXED_BYTES + sample_bytes(24, n_feat=8)  # one sample of the demo's patch 24
    p_auto, plan_auto, notes = _trained(demo, batch_size=2, accumulate='auto', max_memory=small)
    p_acc, plan_acc, _ = _trained(demo, batch_size=1, accumulate=2)
    assert plan_auto == plan_acc == (1, 2, 2, 2)  # micro-batch 1, 2 of them, batch 2, 2 updates
    assert any('--accumulate auto: batch 2 as 2 micro-batch(es) of 1' in m for m in notes)
    assert all(np.array_equal(a, b) for a, b in zip(p_auto, p_acc))
    p_big, plan_big, _ = _trained(demo, batch_size=2, accumulate='auto', max_memory=2 ** 50)
    p_one, plan_one, _ = _trained(demo, batch_size=2, accumulate=1)
    assert plan_big == plan_one == (2, 1, 2, 2)
    assert all(np.array_equal(a, b) for a, b in zip(p_big, p_one))
    assert not all(np.array_equal(a, b) for a, b in zip(p_big, p_auto))  # the test can tell them apart


def test_run_budget(monkeypatch):
    """--max_memory, else none with --tile, else a resumed run's earlier budget, else the default."""
    from jittor_sbvsr.infer import memory_plan
    monkeypatch.setattr(memory_plan, 'default_run_budget', lambda: 5 * 2 ** 30)
    assert memory_plan.run_budget(2 ** 30, 0) == 2 ** 30
    assert memory_plan.run_budget(2 ** 30, 0, earlier=3 * 2 ** 30) == 2 ** 30
    assert memory_plan.run_budget(None, 64) is None
    assert memory_plan.run_budget(None, 0, earlier=3 * 2 ** 30) == 3 * 2 ** 30
    assert memory_plan.run_budget(None, 0) == 5 * 2 ** 30
    monkeypatch.setattr(memory_plan, 'default_run_budget', lambda: None)  # free memory unknown: no limit
    assert memory_plan.run_budget(None, 0) is None
