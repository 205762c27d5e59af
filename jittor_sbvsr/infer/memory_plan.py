"""How a window of inference fits the memory it may use: tile size, and what lives where.

A window's memory has two homes. On the CPU both are host RAM. On a GPU the
network's tensors are device memory, while the blending of tiles (float64
sums and weights, infer/engine.py ``_recons_tiled``) and the frames stay on
the host: each is planned against its own memory, so host buffers never
shrink the tiles of a GPU run. Device memory is also taken by cuDNN's
algorithm search (Jittor 1.3.8.5, ``cudnn_conv_op.cc``: a workspace of up
to ``max_workspace_ratio`` x the card, 0.25 as shipped; the runtime lowers
it to ``utils/memory.py:cudnn_workspace``) and by the allocator's slack,
which the device budget sets aside (``device_budget`` there).

The kernel and the flows run on whole frames in every plan (the untiled
part): when that alone does not fit, tiles cannot help, and the plan says
what would (``Plan.problem``). ``inference.py --dry_run`` prints the plan
(:func:`plan_lines`) without running the network; with ``--device cuda
--max_memory SIZE`` it plans for a card with SIZE free, on any machine.
"""
import os
from dataclasses import dataclass, field
from typing import Optional

from ..errors import UserError
from ..utils.memory import format_size

__all__ = ['tile_spans', 'min_tile', 'window_bytes', 'host_bytes', 'choose_tile', 'Plan', 'plan_window',
           'plan_lines', 'dry_run']

# Peak memory of one window beyond the loaded engine (bytes), fitted to the peak
# RSS of windows on the CPU: bench/window_memory.py, recipe weights, default
# engine, 2 threads; 48x64 to 180x320 LR untiled and 180x320 in 64- and
# 96-px tiles (two border windows), 540x960 untiled and in 192-px tiles (one
# window). With the two terms known from the shapes (cached frame features,
# tile blending) taken out, least squares gave 98 MiB + 483 B per frame
# pixel + 15.9 KB per tile pixel, within 13% of every run from 96x128 up
# (48x64: its whole 76 MiB is below the fixed term). The constants below are
# that fit raised to lie above every measured run, the features counted for
# all n_seq frames (a window holds at most that many). On a GPU the same
# counts are taken for the device's share (not measured there).
WINDOW_FIXED_BYTES = 128 * 2 ** 20
FRAME_BYTES_PER_PIXEL = 600        # whole-frame work: input, kernel, flows, pyramids
TILE_BYTES_PER_PIXEL = 18500       # one tile's reconstruction, its HR layers above all
BLEND_BYTES_PER_PIXEL = 16 * 44    # tiled: float64 sum (3) and weights (1), float32 result (3), per HR px


def tile_spans(n, tile, overlap):
    """(start, stop) of the tiles along an axis of ``n`` LR pixels.

    Tiles are ``tile`` long and step by ``tile - overlap``; the last one ends
    at ``n``. ``tile`` 0 (off) or >= n: one span, the whole axis.
    """
    if tile <= 0 or tile >= n:
        return [(0, n)]
    if not 0 <= overlap < tile:
        raise UserError(f'--tile_overlap must be >= 0 and smaller than --tile ({overlap} vs {tile})')
    starts = list(range(0, n - tile, tile - overlap)) + [n - tile]
    return [(s, s + tile) for s in starts]


def min_tile(overlap):
    """The smallest tile the budget may choose: twice the overlap and at least 32 LR pixels."""
    return max(2 * overlap + 8, 32)


def untiled_bytes(h, w):
    """The part of a window that tiles do not shrink: the kernel and flows on whole frames."""
    return int(WINDOW_FIXED_BYTES + FRAME_BYTES_PER_PIXEL * h * w)


def host_bytes(h, w, tile=0, overlap=16):
    """Host memory of a GPU window: the tiles' blending buffers (none untiled)."""
    tiled = len(tile_spans(h, tile, overlap)) * len(tile_spans(w, tile, overlap)) > 1
    return BLEND_BYTES_PER_PIXEL * h * w if tiled else 0


def window_bytes(h, w, tile=0, overlap=16, keep_features=True, n_seq=5, n_feat=128, device='cpu'):
    """Conservative peak memory (bytes) of one window of h x w LR frames in ``tile`` tiles, on the
    memory the network runs in (``device``).

    Fixed + FRAME_BYTES_PER_PIXEL x h x w + TILE_BYTES_PER_PIXEL x the
    largest tile's LR pixels (tile 0: the whole frame), plus the frame
    features (n_feat float32 a pixel for each of n_seq frames: over every
    tile when kept across windows, ``keep_features``; else over one tile) and,
    on the CPU when tiled, the blending arrays (on a GPU they are host memory:
    :func:`host_bytes`).
    """
    ys, xs = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    one = (ys[0][1] - ys[0][0]) * (xs[0][1] - xs[0][0])
    covered = sum(e - s for s, e in ys) * sum(e - s for s, e in xs) if keep_features else one
    blend = host_bytes(h, w, tile, overlap) if device == 'cpu' else 0
    return int(untiled_bytes(h, w) + TILE_BYTES_PER_PIXEL * one + 4 * n_feat * n_seq * covered + blend)


def choose_tile(h, w, budget, overlap=16, device='cpu'):
    """(tile, keep_features) for h x w frames under ``budget`` bytes of ``device`` memory.

    Whole frames when they fit; else the largest tile (a multiple of 8) whose
    window fits with the frame features kept across windows; else the
    largest that fits with them recomputed for each tile (same output, more
    work); else the smallest tile, recomputing.
    """
    if window_bytes(h, w, 0, overlap, device=device) <= budget:
        return 0, True
    lo = min_tile(overlap)
    for keep in (True, False):
        for tile in range(max(h, w) // 8 * 8, lo - 1, -8):
            if window_bytes(h, w, tile, overlap, keep, device=device) <= budget:
                return tile, keep
    return lo, False


@dataclass
class Plan:
    """One video's plan: where the network runs, its budgets, the tile, the estimates."""
    device: str
    h: int
    w: int
    budget: Optional[int] = None  # the network's memory budget (device memory on a GPU), None: no limit
    host_budget: Optional[int] = None  # host memory for the blending (GPU runs), None: unknown
    tile: int = 0
    keep: bool = True
    tiles: int = 1
    peak: int = 0               # estimated peak of the network's memory
    host: int = 0               # estimated host buffers of a GPU run (in ``peak`` on the CPU)
    problems: list = field(default_factory=list)


def plan_window(h, w, device, budget, overlap=16, tile=0, host_budget=None):
    """The :class:`Plan` of h x w frames: ``tile`` given (--tile), else chosen for ``budget``."""
    keep = True
    if not tile and budget:
        tile, keep = choose_tile(h, w, budget, overlap, device)
    n = len(tile_spans(h, tile, overlap)) * len(tile_spans(w, tile, overlap))
    p = Plan(device, h, w, budget, host_budget, tile if n > 1 else 0, keep, n,
             window_bytes(h, w, tile, overlap, keep, device=device),
             host_bytes(h, w, tile, overlap) if device != 'cpu' else 0)
    where = 'device' if device != 'cpu' else 'host'
    if budget and untiled_bytes(h, w) > budget:
        p.problems.append(
            f'the kernel and flows on whole {h}x{w} frames alone need ~{format_size(untiled_bytes(h, w))} of '
            f'{where} memory, more than the budget of {format_size(budget)}, and tiles do not shrink them: '
            + ('free device memory (other programs), use a GPU with more memory, run with --device cpu, '
               'or downscale the input' if device != 'cpu' else
               'free memory, or downscale the input'))
    elif budget and p.peak > budget:
        p.problems.append(f'even {p.tile}x{p.tile} tiles may not fit the budget of {format_size(budget)}')
    if p.host and host_budget is not None and p.host > host_budget:
        p.problems.append(f'the blending of tiles needs ~{format_size(p.host)} of host memory, more than the '
                          f'{format_size(host_budget)} free: close other programs, or downscale the input')
    return p


def plan_lines(plan, notes=()):
    """The dry run's lines for one plan."""
    budget = format_size(plan.budget) if plan.budget else 'no limit'
    lines = [f'device: {plan.device}' + ''.join(f'; {n}' for n in notes),
             f'frames: {plan.h}x{plan.w} LR',
             f'budget: {budget} of {"device" if plan.device != "cpu" else "host"} memory for a window'
             + (f'; host memory free for buffers: {format_size(plan.host_budget)}'
                if plan.device != 'cpu' and plan.host_budget else ''),
             f'tile: {f"{plan.tile}x{plan.tile} LR" if plan.tile else "none (whole frames)"}, '
             f'{plan.tiles} tile(s) per window'
             + ('' if plan.keep else ', frame features recomputed for each tile'),
             f'estimated peak: {format_size(plan.peak)} of {"device" if plan.device != "cpu" else "host"} memory'
             + (f', {format_size(plan.host)} of host memory (tile blending)' if plan.device != 'cpu' else '')]
    return lines + [f'problem: {p}' for p in plan.problems]


def current_device():
    import jittor as jt
    return 'cuda' if jt.flags.use_cuda else 'cpu'


def default_run_budget():
    """--max_memory's default: utils/memory.py's share of what the device has free now, divided
    between the ranks that share it (of one GPU; on the CPU, of this machine)."""
    from .. import runtime
    from ..utils.memory import default_budget
    device = current_device()
    return default_budget(device, runtime.ranks_sharing_device() if device == 'cuda' else runtime.local_size())


def run_budget(given, tile, earlier=None, device='cpu'):
    """The memory budget (bytes; None: no limit) a run's tiles are chosen from: ``given``
    (--max_memory; on CUDA the device memory the run may use, less cuDNN's workspace and the
    allocator's slack); none with a fixed ``tile``; else the ``earlier`` one of the run a --resume
    continues, so that it tiles as that run did; else the default, rank 0's under mpirun, so that
    every rank tiles alike (free memory moves between reads)."""
    if tile:
        return given
    if given is not None:
        from ..utils.memory import device_budget
        return device_budget(given) if device == 'cuda' else given
    if earlier is not None:
        return int(earlier)
    from .. import dist
    return dist.decided_by_rank0(default_run_budget)


def _nvidia_smi_memory():
    """(free, total) bytes of this rank's GPU from nvidia-smi (no CUDA context opened), or None."""
    import subprocess
    first = (os.environ.get('CUDA_VISIBLE_DEVICES') or '0').split(',')[0].strip()
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=memory.free,memory.total', '--format=csv,noheader,nounits',
                              '-i', first], capture_output=True, text=True, encoding='utf-8', errors='replace',
                             timeout=30).stdout
        free, total = (int(v) * 2 ** 20 for v in out.splitlines()[0].split(','))
        return free, total
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def dry_run_budgets(device, max_memory):
    """(device budget, host budget, note) a run would plan with, asked without starting CUDA."""
    from .. import runtime
    from ..utils.memory import CPU_SHARE, GPU_SHARE, default_budget, device_budget, host_memory
    host = host_memory()
    host_free = int(host[0] * CPU_SHARE) if host else None
    if device == 'cpu':
        return (max_memory or default_budget('cpu', runtime.local_size())), None, 'host memory'
    if max_memory:
        return device_budget(max_memory), host_free, f'a GPU with {format_size(max_memory)} free (--max_memory)'
    mem = _nvidia_smi_memory()
    if mem is None:
        return None, host_free, 'GPU memory unknown here (give --max_memory SIZE to plan for a card)'
    usable = mem[0] * GPU_SHARE / runtime.ranks_sharing_device()
    return device_budget(usable, mem[1]), host_free, (f'GPU {os.environ.get("CUDA_VISIBLE_DEVICES", "0")}: '
                                                      f'{format_size(mem[0])} free of {format_size(mem[1])}')


def dry_run(plan, say=print):
    """--dry_run: each video size's memory plan (plan.make_plan's ``plan``), without running the network
    (nor starting CUDA)."""
    videos, m = plan.videos, plan.size_must_mode
    sizes = [(v.shape[0] - v.shape[0] % m, v.shape[1] - v.shape[1] % m) for v in videos]  # as the run crops
    budget, host_budget, note = dry_run_budgets(plan.device, plan.max_memory)
    say(f'dry run: the memory plan of {len(videos)} video(s); nothing is run or written')
    for size in dict.fromkeys(sizes):
        names = [v.name for v, s in zip(videos, sizes) if s == size]
        window = plan_window(*size, plan.device, None if plan.tile else budget, plan.tile_overlap, plan.tile,
                             host_budget)
        window.budget = budget
        say(f'{", ".join(names[:3])}{f" and {len(names) - 3} more" if len(names) > 3 else ""}:')
        for line in plan_lines(window, [note]):
            say(f'  {line}')
