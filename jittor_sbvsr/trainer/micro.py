"""Micro-batches that fit a memory budget and still make the update of the whole batch.

With ``--accumulate auto`` the ``--batch_size`` samples of each update are
split into ``n`` micro-batches of ``batch_size / n`` samples, ``n`` the
smallest count whose micro-batch fits the budget (``--max_memory``, else
utils/memory.py's default). The loader then runs exactly what an explicit
``--batch_size batch_size/n --accumulate n`` runs: the same samples, drawn
with the same random numbers, in the same order, each micro-batch's loss
weighted by its share of the update (data/loader.py: Loader.shares), so the
update is that of the whole batch; only the float rounding of the summed
gradients differs from one big batch.

Memory of one training sample, measured on the CPU (bench/infer_speed.py
--train-step --patch 64 --steps 1, the paper model with the recipe weights,
2 threads; bench/results/2026-12-05_cpu2_train_step_b*.json): peak RSS
882 MiB at batch 1, 1432 at batch 4 (1091 at batch 2 in an earlier run),
so 183 MiB a sample at LR patch 64 (256x256 HR), 2.9 KB per HR pixel of the
5-frame window. :data:`SAMPLE_BYTES_PER_HR_PIXEL` is that plus a third;
the per-step fixed part (above the loaded model and the process's own
~640 MiB) was within the fit's noise, :data:`STEP_FIXED_BYTES` allows for
it. On CUDA the same counts are used (not measured there: cuDNN's workspace
and the allocator's slack come on top, which utils/memory.py's
``device_budget`` sets aside). The budget from free memory is read once, by
rank 0, and shared (``dist.decided_by_rank0``): every rank must split its
batch alike, or the ranks would all-reduce different numbers of times.
"""
from .. import dist, runtime
from ..errors import UserError
from ..utils.memory import default_budget, device_budget, format_size

__all__ = ['sample_bytes', 'split_batch', 'training_budget', 'plan_batches']

# Peak RSS of a training step = fixed + samples x per-sample bytes; per-sample
# bytes = SAMPLE_BYTES_PER_HR_PIXEL x (patch_size x scale)^2 x n_sequence / 5 x n_feat / 128.
SAMPLE_BYTES_PER_HR_PIXEL = 4000
STEP_FIXED_BYTES = 256 * 2 ** 20  # gradients, Adam's moments, Jittor's compiled graphs


def sample_bytes(patch_size, scale=4, n_sequence=5, n_feat=128):
    """Conservative memory of one sample's forward and backward pass (bytes)."""
    hr = (patch_size * scale) ** 2
    return int(SAMPLE_BYTES_PER_HR_PIXEL * hr * n_sequence / 5 * max(n_feat, 32) / 128)


def split_batch(batch_size, budget, per_sample, fixed=STEP_FIXED_BYTES):
    """(micro-batch size, count): the fewest equal micro-batches of ``batch_size`` that fit ``budget``.

    Equal sizes (a divisor of ``batch_size``) keep the loader's batches the
    same samples as the whole batch's; one sample is the floor.
    """
    room = budget - fixed
    for n in range(1, batch_size + 1):
        if batch_size % n == 0 and (batch_size // n) * per_sample <= room:
            return batch_size // n, n
    return 1, batch_size


def training_budget(max_memory, device='cpu'):
    """The bytes a training step (and evaluation) may use: --max_memory (on CUDA the device memory
    the run may take, less cuDNN's workspace and the allocator's slack), else the default share
    of free memory, divided between the ranks that share it, decided by rank 0 for every rank."""
    if max_memory:
        return device_budget(max_memory) if device == 'cuda' else max_memory
    share = runtime.ranks_sharing_device() if device == 'cuda' else runtime.local_size()
    return dist.decided_by_rank0(lambda: default_budget(device, share))


def plan_batches(args, device='cpu', notes=None):
    """(loader batch size, accumulate) for ``args``: as given, or resolved from the budget.

    ``notes`` gets one line that says what ``--accumulate auto`` chose.
    """
    if args.accumulate != 'auto':
        return args.batch_size, args.accumulate
    budget = training_budget(args.max_memory, device)
    if budget is None:
        raise UserError('--accumulate auto: the free memory of this machine is unknown; give --max_memory')
    per = sample_bytes(args.patch_size, args.scale, args.n_sequence, args.n_feat)
    micro, n = split_batch(args.batch_size, budget, per)
    if notes is not None:
        fits = micro * per + STEP_FIXED_BYTES <= budget
        notes.append(f'--accumulate auto: batch {args.batch_size} as {n} micro-batch(es) of {micro} '
                     f'(~{format_size(per)} a sample at patch {args.patch_size}; budget {format_size(budget)}'
                     + ('' if fits else '; even one sample may not fit') + ')')
    return micro, n
