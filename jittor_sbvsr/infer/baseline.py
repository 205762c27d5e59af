"""Bicubic beside the model: the paper's baseline on the same frames, with the same metric and crop.

After a run with ground truth, rank 0 upscales each scored output frame's LR
frame by bicubic (data/kernels.py: MATLAB's imresize, as the paper's tables)
and scores it exactly as the model's frame was scored (the size-multiple
crop, then metrics.psnr_ssim's 4-pixel border), so the log says per video
and in total how far the model is above or below bicubic.
"""
import contextlib

import numpy as np

from ..metrics.psnr_ssim import bicubic_psnr_ssim
from .inputs import GroundTruth, frames
from .report import per_video

__all__ = ['bicubic_rows', 'log_bicubic', 'demo_verdict']


def bicubic_rows(v, windows, mid, m, scale):
    """[n_windows, 2] bicubic (PSNR, SSIM) of video ``v``'s output frames (window centres)."""
    centres = [w[mid] for w in windows]
    at = {}
    for k, t in enumerate(centres):
        at.setdefault(t, []).append(k)
    rows = np.zeros((len(windows), 2))
    first, last = min(centres), max(centres)
    gt = GroundTruth(v.gt, v.gt_info, first)
    try:
        with contextlib.closing(frames(v, m, first)) as lr_frames:
            for t, lr in enumerate(lr_frames, start=first):
                if t in at:
                    g, _ = gt(t)
                    h, w = lr.shape[0] * scale, lr.shape[1] * scale
                    rows[at[t]] = bicubic_psnr_ssim(lr, g[:h, :w], scale)
                if t == last:
                    break
    finally:
        gt.close()
    return rows


def log_bicubic(log, plan, videos, wins, rows):
    """Bicubic's average lines beside the model's (``rows``: the run's [PSNR, SSIM, s] per window);
    the demo says in words whether its model beats bicubic. Returns the total's (model, bicubic)
    PSNR, or None without ground truth."""
    mid = plan.n_seq // 2
    scored, base = [], []
    for v, w, r in zip(videos, wins, per_video(rows, wins)):
        if v.gt is None or v.no_metric is not None:
            continue
        b = bicubic_rows(v, w, mid, plan.size_must_mode, plan.scale)
        p, q = b.mean(axis=0)
        log(f'# Video:{v.name} bicubic AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f} (model {r[:, 0].mean() - p:+.2f} dB)')
        scored.append(r[:, :2])
        base.append(b)
    if not scored:
        return None
    model, bic = np.concatenate(scored).mean(axis=0), np.concatenate(base).mean(axis=0)
    log(f'# Total bicubic AVG-PSNR={bic[0]:.5f}, AVG-SSIM={bic[1]:.4f} (model {model[0] - bic[0]:+.2f} dB)')
    return float(model[0]), float(bic[0])


def demo_verdict(model, bicubic, untrained):
    """The demo's plain words on its model against bicubic (PSNR, dB)."""
    d = model - bicubic
    if d >= 0:
        return f'demo: the model beats bicubic by {d:.2f} dB on these clips ({model:.2f} vs {bicubic:.2f} dB)'
    return (f'demo: the model is {-d:.2f} dB BELOW bicubic on these clips ({model:.2f} vs {bicubic:.2f} dB): '
            + ('its weights are untrained' if untrained else 'it is not trained enough for them'))
