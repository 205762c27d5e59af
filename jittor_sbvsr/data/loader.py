"""A small batching loader with reproducible randomness, serial or with workers.

Every sample is ``dataset.get(index, sample_rng(seed, epoch, index))``: its
random numbers (crop, flips, blur kernel) depend only on the base seed, the
epoch and the dataset index, never on which worker made it or how many
workers there are. The sample order of an epoch is a permutation drawn from
(seed, epoch) alone. So a run is the same with 0 or 8 workers, and a run
resumed at epoch e (and batch b, see :meth:`Loader.set_epoch`) sees exactly
the batches the uninterrupted run saw.

Under MPI (``rank``, ``world`` > 1) the epoch order is the same on every
rank and each global batch of ``batch_size * world`` samples is split in
rank order: the ranks together see exactly the batches one process with
``batch_size * world`` would see, each sample made with the same random
numbers. A rank whose part of the last, partial batch is empty gets that
batch's first sample (its loss weight is 0) so that every rank takes part in
every collective.

Batch weights live here too, beside the sharding they follow:
:meth:`Loader.weighted` yields each batch with its :class:`BatchPart` (this
rank's and the global sample counts, the loss weight, whether the
optimizer steps after it), so that gradient accumulation over
``accumulate`` batches and the ranks' averaging together make the update of
one big batch.

Workers are processes (default; started with 'spawn', which is safe next to
Jittor and CUDA and works on Windows) or threads; they live as long as the
loader and are reused across epochs. At most ``prefetch`` batches are in
flight per worker. A worker's exception (e.g. a ``UserError`` for an
unreadable frame) is raised again in the caller.
"""
import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import signal
from collections import deque
from typing import NamedTuple

import numpy as np

__all__ = ['Loader', 'BatchPart', 'sample_rng', 'epoch_order', 'collate']

_TAG_SAMPLE = 0x5A4D
_TAG_ORDER = 0x0D3E


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    return int(seed)


def sample_rng(seed, epoch, index):
    """The random generator of sample ``index`` in ``epoch`` (PCG64 from a SeedSequence)."""
    key = [_check_seed(seed), int(epoch), int(index), _TAG_SAMPLE]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def epoch_order(n, seed, epoch, shuffle=True):
    """Dataset indices of one epoch, in order: a permutation from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    key = [_check_seed(seed), int(epoch), _TAG_ORDER]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
    return rng.permutation(n).astype(np.int64)


def collate(items):
    """List of sample dicts -> dict of batches.

    Arrays and numbers are stacked with ``np.stack``; strings become a list;
    a key that is None in every sample stays None.
    """
    if not items:
        raise ValueError('cannot collate an empty batch')
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        nones = sum(v is None for v in values)
        if nones == len(values):
            out[key] = None
        elif nones:
            raise ValueError(f'batch key {key!r} is None in some samples only')
        elif all(isinstance(v, str) for v in values):
            out[key] = list(values)
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    return out


# -------------------------------------------------------------- worker side

_worker_dataset = None


def _init_worker(dataset):
    global _worker_dataset
    _worker_dataset = dataset
    # Ctrl-C is handled by the parent, which shuts the workers down.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        pass


def _make_sample(dataset, seed, epoch, index):
    item = dataset.get(int(index), sample_rng(seed, epoch, index))
    item['index'] = int(index)
    return item


def _worker_batch(seed, epoch, indices):
    return collate([_make_sample(_worker_dataset, seed, epoch, i) for i in indices])


def _local_batch(dataset, seed, epoch, indices):
    return collate([_make_sample(dataset, seed, epoch, i) for i in indices])


# -------------------------------------------------------------- loader

class BatchPart(NamedTuple):
    """This rank's part of one global batch, and what the trainer does with it."""
    samples: int   # real samples of this rank (0: it got a stand-in sample)
    total: int     # samples of the global batch, all ranks together
    weight: float  # loss weight, see Loader.batch_parts
    step: bool     # the last batch of its accumulation group: step the optimizer after it


class Loader:
    """Batches of ``dataset`` as dicts of numpy arrays (plus 'name': list of str, 'index').

    ``len(loader)`` is the number of batches of an epoch. Call
    :meth:`set_epoch` before iterating (epoch 0 otherwise). ``num_workers=0``
    makes every batch in the calling thread. ``accumulate`` groups that many
    consecutive batches into one update (see :meth:`batch_parts`).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, num_workers=0, seed=0,
                 drop_last=False, worker_type='process', prefetch=2, start_method='spawn',
                 rank=0, world=1, accumulate=1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f'num_workers must be >= 0, got {num_workers!r}')
        if isinstance(accumulate, bool) or not isinstance(accumulate, (int, np.integer)) \
                or accumulate < 1:
            raise ValueError(f'accumulate must be a positive integer, got {accumulate!r}')
        if worker_type not in ('process', 'thread'):
            raise ValueError(f"worker_type must be 'process' or 'thread', got {worker_type!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.num_workers = int(num_workers)
        self.seed = _check_seed(seed)
        self.drop_last = bool(drop_last)
        self.worker_type = worker_type
        self.prefetch = max(int(prefetch), 1)
        self.start_method = start_method
        self.world = int(world)
        self.rank = int(rank)
        self.accumulate = int(accumulate)
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f'rank {rank} of world {world} is not valid')
        self.epoch = 0
        self.start_batch = 0
        self._pool = None
        self._plan = (None, None)  # (epoch, its global batches): drawn once per epoch

    # -- epoch bookkeeping
    def set_epoch(self, epoch, start_batch=0):
        """Select the epoch's order and sample seeds; skip its first ``start_batch`` batches."""
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)
        if self.start_batch < 0:
            raise ValueError(f'start_batch must be >= 0, got {start_batch}')

    def __len__(self):
        n, gb = len(self.dataset), self.batch_size * self.world
        return n // gb if self.drop_last else -(-n // gb)

    def _global_batches(self, epoch):
        if self._plan[0] != epoch:
            order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
            gb = self.batch_size * self.world
            self._plan = (epoch, [order[b * gb:(b + 1) * gb] for b in range(len(self))])
        return self._plan[1]

    def _my_part(self, g):
        """This rank's part of the global batch ``g`` (empty for a short last batch)."""
        return g[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def part_sizes(self):
        """Per batch: (samples in the global batch, real samples of this rank's part)."""
        return [(len(g), len(self._my_part(g))) for g in self._global_batches(self.epoch)]

    def batch_parts(self):
        """Per batch of the epoch (before ``start_batch``): this rank's :class:`BatchPart`.

        Batch j of an accumulation group of ``S`` samples (all ranks) with
        ``s`` of them on this rank gets the weight ``s * world / S``: the
        ranks' mean (Jittor's all-reduce) of the accumulated, weighted batch
        means is then the mean over all ``S`` samples, the update of one big
        batch. A rank with no sample in the batch gets weight 0.
        """
        sizes = self.part_sizes()
        acc = self.accumulate
        out = []
        for j, (total, mine) in enumerate(sizes):
            g0 = (j // acc) * acc
            group = sizes[g0:g0 + acc]
            out.append(BatchPart(mine, total, mine * self.world / sum(g for g, _ in group),
                             j == g0 + len(group) - 1))
        return out

    def weighted(self):
        """Iterate over ``(batch, part)`` pairs of the epoch (from ``start_batch`` on)."""
        return zip(self, self.batch_parts()[self.start_batch:])

    def batch_indices(self, epoch=None):
        """This rank's index lists of all batches of an epoch (before ``start_batch`` is applied)."""
        epoch = self.epoch if epoch is None else int(epoch)
        out = []
        for g in self._global_batches(epoch):
            part = self._my_part(g)
            out.append((part if len(part) else g[:1]).tolist())
        return out

    # -- workers
    def _get_pool(self):
        if self._pool is None:
            if self.worker_type == 'thread':
                self._pool = cf.ThreadPoolExecutor(self.num_workers,
                                                   thread_name_prefix='sbvsr-loader')
            else:
                ctx = multiprocessing.get_context(self.start_method)
                self._pool = cf.ProcessPoolExecutor(self.num_workers, mp_context=ctx,
                                                    initializer=_init_worker,
                                                    initargs=(self.dataset,))
        return self._pool

    def _submit(self, pool, epoch, indices):
        if self.worker_type == 'thread':
            return pool.submit(_local_batch, self.dataset, self.seed, epoch, indices)
        return pool.submit(_worker_batch, self.seed, epoch, indices)

    def close(self):
        """Stop the workers (they are restarted if the loader is used again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        except Exception:
            pass

    # -- iteration
    def __iter__(self):
        epoch = self.epoch
        batches = self.batch_indices(epoch)[self.start_batch:]
        if self.num_workers == 0:
            for idx in batches:
                yield _local_batch(self.dataset, self.seed, epoch, idx)
            return
        pool = self._get_pool()
        pending = deque()
        todo = iter(batches)
        limit = self.num_workers * self.prefetch
        try:
            for idx in todo:
                pending.append(self._submit(pool, epoch, idx))
                if len(pending) >= limit:
                    break
            while pending:
                result = pending.popleft().result()
                for idx in todo:
                    pending.append(self._submit(pool, epoch, idx))
                    break
                yield result
        except BrokenProcessPool:
            # a worker's own exceptions come back as themselves: this one was killed (by the
            # system, out of memory, most often); Jittor's SIGCHLD handler no longer says so
            from ..errors import UserError
            self._pool = None
            raise UserError('a data loader worker process was killed (often: the system ran out of '
                            'memory); lower --n_threads or --batch_size, or use --n_threads 0') from None
        finally:
            for f in pending:
                f.cancel()
