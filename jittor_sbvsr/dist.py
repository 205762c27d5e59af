"""Several processes under ``mpirun``: who this is, and small collectives on numpy values and Vars.

Jittor (built with Open MPI's ``mpicc``) calls ``MPI_Init`` at import when
``mpirun`` started it, and its optimizers average every gradient over the
ranks (``mpi_all_reduce('mean')`` in ``Optimizer.backward``) and broadcast the
weights from rank 0 at the first step. The rest is here, shared by training
(trainer/) and inference (infer/split.py): only rank 0 logs, draws progress
and writes files (:func:`rank`); :func:`broadcast_vars` makes every rank start
each epoch from rank 0's weights and Adam moments, bit for bit; a rank that
waits forever on a dead peer is ended by trainer/watchdog.py. Without mpirun
every one is a no-op (world size 1). Each collective must be reached by every rank, in the same
order, or the ranks wait forever: callers run the same code on every rank.
"""
import numpy as np

__all__ = ['rank', 'world_size', 'all_sum', 'barrier', 'weighted_mean', 'broadcast_vars', 'merge_owned',
           'gather_text', 'broadcast_text', 'decided_by_rank0']


def _jt():
    import jittor as jt
    return jt


def rank():
    """This process's MPI rank (Jittor's; 0 without mpirun)."""
    return int(_jt().rank)


def world_size():
    """The number of MPI ranks (Jittor's; 1 without mpirun)."""
    return int(_jt().world_size)


def all_sum(values):
    """Element-wise sum over the ranks of an array (a float64 copy of it with one rank).

    Jittor's MPI ops carry float32: the sum is float32-exact, not float64.
    """
    a = np.array(values, dtype=np.float64, copy=True)
    if world_size() == 1:
        return a
    jt = _jt()
    return jt.array(a).mpi_all_reduce('add').numpy().astype(np.float64)


def barrier():
    """Wait until every rank got here."""
    all_sum([0.0])


def weighted_mean(means, n, total):
    """{name: mean over all ranks' samples}, from this rank's ``means`` over its ``n`` of
    the ``total`` samples (the dict itself with one rank)."""
    if world_size() == 1:
        return means
    keys = list(means)
    summed = all_sum([means[k] * n for k in keys]) / total
    return {k: float(v) for k, v in zip(keys, summed)}


def broadcast_vars(vs, root=0):
    """Overwrite the Jittor Vars ``vs`` on every rank with rank ``root``'s values."""
    if world_size() == 1 or not vs:
        return
    jt = _jt()
    for v in vs:
        v.update(v.mpi_broadcast(root))
    jt.sync(vs)


def merge_owned(values):
    """Every rank's float64 entries, bit for bit: each entry set on one rank and 0.0 on the others.

    Jittor's MPI reduces float64 as float32, so the bits travel as int32
    pairs: adding zeros to an integer is exact.
    """
    a = np.ascontiguousarray(values, dtype=np.float64)
    if world_size() == 1:
        return a.copy()
    jt = _jt()
    summed = jt.array(a.reshape(-1).view(np.int32)).mpi_all_reduce('add').numpy()
    return np.ascontiguousarray(summed, dtype=np.int32).view(np.float64).reshape(a.shape)


def gather_text(text):
    """Every rank's ``text``, in rank order, on every rank (UTF-8 bytes summed into their own spans)."""
    if world_size() == 1:
        return [text]
    mine = np.frombuffer(text.encode('utf-8'), np.uint8)
    sizes = np.zeros(world_size())
    sizes[rank()] = len(mine)
    ends = np.cumsum(all_sum(sizes)).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    if ends[-1] == 0:
        return [''] * world_size()
    buf = np.zeros(int(ends[-1]), np.float64)
    buf[starts[rank()]:ends[rank()]] = mine
    data = all_sum(buf).astype(np.uint8).tobytes()
    return [data[a:b].decode('utf-8') for a, b in zip(starts, ends)]


def broadcast_text(text):
    """Rank 0's ``text`` on every rank (e.g. a folder name only rank 0 may choose)."""
    return gather_text(text if rank() == 0 else '')[0]


def decided_by_rank0(fn):
    """``fn()`` (an int or None) read on rank 0 alone and given to every rank: a budget from free
    memory, which moves between reads, must be one number for all, or the ranks would tile or
    split batches differently (different numbers of all-reduces: a hang)."""
    if world_size() == 1:
        return fn()
    value = broadcast_text(str(fn() if rank() == 0 else None))
    return None if value == 'None' else int(value)
