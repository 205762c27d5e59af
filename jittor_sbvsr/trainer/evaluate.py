"""Evaluation during training: the model in 'val' mode on the test set, three PSNRs.

PSNR (reconstruction vs HR), cycle-PSNR (the input vs the blurred-down
reconstruction) and down-PSNR (the input vs the reconstruction from the
blurred-down input), as the reference's trainer reports them. Under MPI each
rank takes every ``world``-th window and the sums are added over the ranks.
"""
import os

import jittor as jt

from ..data.windows import to_uint8
from ..data.kernels import kernel_image_minmax
from ..metrics.psnr_ssim import calc_psnr
from ..utils import Bar, save_png_atomic
from .. import dist

__all__ = ['PSNR_NAMES', 'evaluate']

PSNR_NAMES = ('psnr', 'cycle_psnr', 'down_psnr')
_OUTPUTS = ('input', 'input_down', 'input_cycle', 'recons', 'recons_down', 'est_kernel')


def evaluate(model, test_set, watchdog, image_dir=None):
    """{name: mean PSNR over all windows} of ``PSNR_NAMES``; ``image_dir``: also write each
    window's result images there (rank 0 shows the progress)."""
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
    with Bar(len(mine), desc='evaluation', unit='window', enabled=rank == 0) as bar, jt.no_grad():
        for done, i in enumerate(mine):
            item = test_set.get(i)
            out, _ = model({'x': jt.array(item['lr'][None]), 'mode': 'val'})
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
