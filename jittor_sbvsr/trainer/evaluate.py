"""Evaluation during training: the model in 'val' mode on the test set, three PSNRs.

PSNR (reconstruction vs HR), cycle-PSNR (the input vs the blurred-down
reconstruction) and down-PSNR (the input vs the reconstruction from the
blurred-down input), as the reference's trainer reports them. Under MPI each
rank takes every ``world``-th window and the sums are added over the ranks.

Frames too large for the memory budget are reconstructed in tiles, as
inference plans them (infer/memory_plan.py, the blending of infer/engine.py):
the kernel and flows on whole frames, the HR reconstruction tile by tile.
"""
import os

import jittor as jt
import numpy as np

from ..data.windows import to_uint8
from ..data.kernels import bicubic_upscale, kernel_image_minmax
from ..metrics.psnr_ssim import calc_psnr
from ..utils import Bar, save_png_atomic
from .. import dist

__all__ = ['PSNR_NAMES', 'evaluate', 'bicubic_psnr']

PSNR_NAMES = ('psnr', 'cycle_psnr', 'down_psnr')
_OUTPUTS = ('input', 'input_down', 'input_cycle', 'recons', 'recons_down', 'est_kernel')


def evaluate(model, test_set, watchdog, image_dir=None, budget=None, log=None):
    """{name: mean PSNR over all windows} of ``PSNR_NAMES``; ``image_dir``: also write each
    window's result images there (rank 0 shows the progress). ``budget`` (bytes, None: no limit):
    frames whose window does not fit it are reconstructed in tiles (``log``, if given, says so)."""
    # No model.eval()/train() here: PWC_Recons behaves the same in both (the
    # mode is part of its input), and Jittor's train() re-enables gradients
    # by turning every parameter into a lazy copy, which changes how the
    # next step's kernels are fused and so its rounding: a resumed run
    # would no longer repeat the uninterrupted one bit for bit.
    c = test_set.n_seq // 2
    sums = {k: 0.0 for k in PSNR_NAMES}
    rank, world = dist.rank(), dist.world_size()
    mine = range(rank, len(test_set), world)  # round-robin: every world-th window, from this rank's on
    watchdog.phase('evaluation')
    tiles = None
    with Bar(len(mine), desc='evaluation', unit='window', enabled=rank == 0) as bar, jt.no_grad():
        for done, i in enumerate(mine):
            item = test_set.get(i)
            if tiles is None:
                tiles = _tiles(item['lr'].shape[-2:], budget, log)
            x = jt.array(item['lr'][None])
            out = model({'x': x, 'mode': 'val'})[0] if len(tiles) == 1 else _val_tiled(model, x, tiles)
            res = {k: out[k].numpy() for k in _OUTPUTS}
            gt = item['hr'][None, c]
            sums['psnr'] += calc_psnr(gt, res['recons'])
            sums['cycle_psnr'] += calc_psnr(res['input'], res['input_cycle'])
            sums['down_psnr'] += calc_psnr(res['input'], res['recons_down'])
            if image_dir is not None:
                _save_images(image_dir, item, gt, res)
            bar.update(1, f'psnr={sums["psnr"] / (done + 1):.3f}')
            watchdog.beat()
    total = dist.all_sum([sums[k] for k in PSNR_NAMES])
    return {k: float(v) / len(test_set) for k, v in zip(PSNR_NAMES, total)}


def _tiles(hw, budget, log):
    """The LR tiles of the test frames under ``budget`` (one: whole frames)."""
    from ..infer.memory_plan import plan_window, tile_spans
    import jittor as jt
    plan = plan_window(*hw, 'cuda' if jt.flags.use_cuda else 'cpu', budget, TILE_OVERLAP)
    if plan.tile and log is not None:
        log(f'note: evaluation reconstructs the {hw[0]}x{hw[1]} test frames in {plan.tiles} tiles of '
            f'{plan.tile}x{plan.tile} (the memory budget: the PSNRs differ slightly from whole frames)')
    return [(ys, xs) for ys in tile_spans(hw[0], plan.tile, TILE_OVERLAP)
            for xs in tile_spans(hw[1], plan.tile, TILE_OVERLAP)]


TILE_OVERLAP = 16  # LR pixels, inference's default


def _val_tiled(model, x, tiles):
    """The 'val' outputs of PWC_Recons with the HR reconstruction made tile by tile."""
    from ..infer.engine import blend_tiles
    n = model.n_sequence
    frames = [x[:, j] for j in range(n)]
    kernel = model.kernel_net(jt.concat(frames, 1))
    flows = model.neighbour_flows(frames)
    h, w = frames[0].shape[2], frames[0].shape[3]

    def one(t, y0, y1, x0, x1):
        ft = {k: f[:, :, y0:y1, x0:x1] for k, f in flows.items()}
        return model.recons_forward([f[:, :, y0:y1, x0:x1] for f in frames], flows=ft).numpy()
    recons = jt.array(blend_tiles(one, tiles, h, w, model.scale, TILE_OVERLAP))
    down = [model.blur_down(f, kernel) for f in frames]
    return {'input': frames[n // 2], 'input_down': down[n // 2], 'input_cycle': model.blur_down(recons, kernel),
            'recons': recons, 'recons_down': model.recons_forward(down), 'est_kernel': kernel}


def _save_images(image_dir, item, gt, res):
    video, frame = item['name'].split('/', 1)
    base = os.path.join(image_dir, video, frame)
    imgs = {'gt': to_uint8(gt[0]), 'lr': to_uint8(res['input'][0]), 'sr': to_uint8(res['recons'][0]),
            'lr_cycle': to_uint8(res['input_cycle'][0]), 'lr_down': to_uint8(res['input_down'][0]),
            'sr_down': to_uint8(res['recons_down'][0]),
            'est_kernel': kernel_image_minmax(res['est_kernel'][0, 0])}
    if item.get('kernel') is not None:
        imgs['gt_kernel'] = kernel_image_minmax(item['kernel'])
    for post, img in imgs.items():
        save_png_atomic(f'{base}_{post}.png', img)


def bicubic_psnr(test_set, scale):
    """The bicubic baseline's mean PSNR on the test set, as :func:`evaluate` scores 'psnr' (the
    centre LR frame of each window upscaled by data/kernels.py's MATLAB bicubic): the
    reference line of the PSNR plot. Numpy only; every rank computes the same number."""
    c = test_set.n_seq // 2
    total = 0.0
    for i in range(len(test_set)):
        item = test_set.get(i)
        up = bicubic_upscale(to_uint8(item['lr'][c]), scale)
        total += calc_psnr(item['hr'][None, c], up.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    return total / len(test_set)
