"""data/loader.py: batching, epoch order, the same batches with any workers and when resumed,
sharding over MPI ranks, worker errors."""
import os

import numpy as np
import pytest

from conftest import copy_video
from jittor_sbvsr.data.datasets import LROnlyTrainSet, OnlineBlurDownTrainSet, PairedTestSet
from jittor_sbvsr.data.loader import Loader, collate, epoch_order
from jittor_sbvsr.errors import UserError


def _batches(loader, epoch, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return list(loader)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x['name'] == y['name']
        for key in ('lr', 'hr', 'kernel', 'index'):
            np.testing.assert_array_equal(x[key], y[key])


def test_collate():
    out = collate([{'a': np.zeros(2), 'n': 'x', 'k': None, 's': 1.5},
                   {'a': np.ones(2), 'n': 'y', 'k': None, 's': 2.5}])
    assert out['a'].shape == (2, 2) and out['n'] == ['x', 'y'] and out['k'] is None
    assert out['s'].tolist() == [1.5, 2.5]
    with pytest.raises(ValueError):
        collate([{'k': None}, {'k': np.zeros(1)}])


def test_epoch_order():
    a = epoch_order(50, 3, 0)
    assert sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, epoch_order(50, 3, 0))
    assert not np.array_equal(a, epoch_order(50, 3, 1))
    assert not np.array_equal(a, epoch_order(50, 4, 0))
    assert epoch_order(5, 3, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_loader_is_deterministic_across_workers(demo_clips):
    ds = OnlineBlurDownTrainSet(demo_clips, kind='realistic', n_seq=3, patch_size=8, repeat=2)
    assert len(ds) == 20
    serial = Loader(ds, batch_size=3, shuffle=True, num_workers=0, seed=7)
    assert len(serial) == 7
    e0 = _batches(serial, 0)
    assert [b['lr'].shape for b in e0] == [(3, 3, 3, 8, 8)] * 6 + [(2, 3, 3, 8, 8)]
    assert sorted(i for b in e0 for i in b['index'].tolist()) == list(range(len(ds)))
    with Loader(ds, batch_size=3, shuffle=True, num_workers=2, seed=7) as procs:
        _assert_same(e0, _batches(procs, 0))
        e1 = _batches(procs, 1)
    with Loader(ds, batch_size=3, shuffle=True, num_workers=2, seed=7, worker_type='thread') as th:
        _assert_same(e1, _batches(th, 1))
    _assert_same(e1, _batches(serial, 1))
    # resume in the middle of an epoch
    _assert_same(e1[2:], _batches(serial, 1, start_batch=2))
    # every sample of every epoch has its own kernel
    kernels_seen = [k.tobytes() for b in e0 + e1 for k in b['kernel']]
    assert len(set(kernels_seen)) == len(kernels_seen) == 2 * len(ds)
    # the same index in another epoch gets another kernel
    first = {i: k.tobytes() for b in e0 for i, k in zip(b['index'].tolist(), b['kernel'])}
    second = {i: k.tobytes() for b in e1 for i, k in zip(b['index'].tolist(), b['kernel'])}
    assert all(first[i] != second[i] for i in first)


def test_loader_shards_each_global_batch_over_mpi_ranks(demo_clips):
    """Ranks together see the batches of one loader with batch_size x world, same samples."""
    ds = OnlineBlurDownTrainSet(demo_clips, kind='realistic', n_seq=3, patch_size=8, repeat=1)
    assert len(ds) == 10
    whole = Loader(ds, batch_size=4, shuffle=True, seed=7)
    ranks = [Loader(ds, batch_size=2, shuffle=True, seed=7, rank=r, world=2) for r in (0, 1)]
    for loader in [whole] + ranks:
        loader.set_epoch(3)
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 3
    big = _batches(whole, 3)
    parts = [_batches(r, 3) for r in ranks]
    # global batches of 4, 4, 2: the last one is rank 0's alone
    assert ranks[0].part_sizes() == [(4, 2), (4, 2), (2, 2)]
    assert ranks[1].part_sizes() == [(4, 2), (4, 2), (2, 0)]
    for j in range(2):
        for key in ('index', 'lr', 'hr', 'kernel'):
            np.testing.assert_array_equal(big[j][key], np.concatenate([parts[0][j][key], parts[1][j][key]]))
    _assert_same([big[2]], [parts[0][2]])
    # a rank without samples gets the batch's first one (weight 0 in the trainer)
    assert parts[1][2]['index'].tolist() == big[2]['index'].tolist()[:1]
    with pytest.raises(ValueError, match='rank 2 of world 2'):
        Loader(ds, rank=2, world=2)


def test_loader_drop_last_and_order(demo_clips):
    ts = PairedTestSet(demo_clips, n_seq=5)
    loader = Loader(ts, batch_size=4, shuffle=False, drop_last=True)
    batches = _batches(loader, 0)
    assert len(loader) == 1 and len(batches) == 1
    assert batches[0]['index'].tolist() == [0, 1, 2, 3]
    assert batches[0]['name'] == [ts.window_name(i) for i in range(4)]
    assert batches[0]['kernel'].shape == (4, 9, 9)
    lr_only = Loader(LROnlyTrainSet(os.path.join(demo_clips, 'LR_blurdown_x4'), n_seq=5, patch_size=8),
                     batch_size=3, shuffle=True, seed=1)
    b = next(iter(lr_only))
    assert b['hr'] is None and b['kernel'] is None and b['lr'].shape == (3, 5, 3, 8, 8)


def test_loader_worker_errors_reach_the_caller(demo_clips, tmp_path):
    bad = tmp_path / 'bad'
    copy_video(os.path.join(demo_clips, 'HR', '000'), bad / 'HR' / 'v1', n=5)
    (bad / 'HR' / 'v1' / '00000004.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    ds = OnlineBlurDownTrainSet(str(bad), n_seq=5, patch_size=8)
    with Loader(ds, batch_size=1, num_workers=1, worker_type='thread') as loader:
        with pytest.raises(UserError, match='00000004.png: cannot read image'):
            list(loader)


def test_loader_weights_uneven_accumulation_groups_like_one_big_batch():
    """Loader.batch_parts: a batch's loss weight is its share of its accumulation group's samples
    (x ranks, which Jittor averages); a rank without samples gets 0; the step comes last."""

    def weights(n, bs, acc, rank=0, world=1):
        loader = Loader([0] * n, batch_size=bs, rank=rank, world=world, accumulate=acc)
        parts = loader.batch_parts()
        return [p.weight for p in parts], [p.step for p in parts]
    assert weights(5, 2, 3) == ([0.4, 0.4, 0.2], [False, False, True])
    assert weights(7, 2, 2) == ([0.5, 0.5, 2 / 3, 1 / 3], [False, True, False, True])
    # two ranks, 7 samples, batch 1 per rank, accumulate 2: global batches 2, 2 | 2, 1
    assert weights(7, 1, 2, rank=0, world=2) == ([0.5, 0.5, 2 / 3, 2 / 3], [False, True, False, True])
    assert weights(7, 1, 2, rank=1, world=2) == ([0.5, 0.5, 2 / 3, 0.0], [False, True, False, True])
    with pytest.raises(ValueError, match='accumulate'):
        Loader([0], accumulate=0)
