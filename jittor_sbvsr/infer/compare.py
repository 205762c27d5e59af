"""--compare: bicubic and the result next to each other, to look at, not only read.

After the run, rank 0 puts beside each video's output the LR frame upscaled by
bicubic (data/kernels.py, the baseline of the log) and the SR frame, and the
ground truth as a third panel when there is one, each panel the full output
size:

- frame folders: ``compare/<video>/<frame>.png``, the panels side by side
  (bicubic | result | ground truth) with a white gap;
- video files: ``<video>_compare.mp4``, a split screen: each panel shows its
  own vertical strip of the picture (left: bicubic, then the result, then
  the ground truth) with a white line between, at the output's size, frame
  times, sound and tracks (data/video.py:VideoWriter).
"""
import contextlib
import os

import numpy as np

from ..data.images import read_frame
from ..data.kernels import bicubic_upscale
from ..data.video import VideoReader, VideoWriter
from ..utils.files import save_png_atomic
from .inputs import GroundTruth, frames, is_video, stem

__all__ = ['side_by_side', 'split_screen', 'write_compare']

_GAP = 4  # white pixels between side-by-side panels
_LINE = 2  # the white line between split-screen strips


def side_by_side(panels):
    """HxWx3 uint8 panels in a row, a white gap between them."""
    h = panels[0].shape[0]
    gap = np.full((h, _GAP, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    return np.concatenate(row, axis=1)


def split_screen(panels):
    """One frame of the panels' size: strip i (of len(panels) equal vertical strips) from panel i,
    a white line on each boundary."""
    out = panels[0].copy()
    w, n = out.shape[1], len(panels)
    edges = [round(i * w / n) for i in range(n + 1)]
    for i, p in enumerate(panels):
        out[:, edges[i]:edges[i + 1]] = p[:, edges[i]:edges[i + 1]]
    for e in edges[1:-1]:
        out[:, max(0, e - _LINE // 2):e + (_LINE + 1) // 2] = 255
    return out


def _results(out_dir, v, centres):
    """The run's SR frames of video ``v``, window after window: its PNGs, or its mp4 decoded."""
    if is_video(v.lr):
        with VideoReader(os.path.join(out_dir, v.name + '.mp4')) as r:
            yield from r
        return
    for t in centres:
        yield read_frame(os.path.join(out_dir, v.name, f'{stem(v, t)}.png'))


def write_compare(plan, out_dir, v, windows):
    """Write video ``v``'s comparison beside its output; returns its path, or None (and why) when
    the run kept no frames to compare (a frame folder run with --no_save_image)."""
    mid = plan.n_seq // 2
    centres = [w[mid] for w in windows]
    if not is_video(v.lr) and not plan.save_image:
        return None, f'--compare: video {v.name} has no PNG results (--no_save_image) to compare'
    first = min(centres)
    gt = GroundTruth(v.gt, v.gt_info, first) if v.gt is not None else None
    path = os.path.join(out_dir, f'{v.name}_compare.mp4') if is_video(v.lr) else \
        os.path.join(out_dir, 'compare', v.name)
    writer = VideoWriter(path, v.fps, crf=plan.crf, source=v.lr, info=v.info) if is_video(v.lr) else None
    lr_at = {}
    try:
        with contextlib.closing(frames(v, plan.size_must_mode, first)) as lr_frames, \
                contextlib.closing(_results(out_dir, v, centres)) as results:
            lr_iter = enumerate(lr_frames, start=first)
            for t in centres:
                while t not in lr_at:
                    i, f = next(lr_iter)
                    lr_at = {i: f}
                sr = next(results)
                panels = [bicubic_upscale(lr_at[t], plan.scale), sr]
                if gt is not None:
                    panels.append(gt(t)[0][:sr.shape[0], :sr.shape[1]])
                if writer is not None:
                    writer.write(split_screen(panels))
                else:
                    save_png_atomic(os.path.join(path, f'{stem(v, t)}.png'), side_by_side(panels))
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if gt is not None:
            gt.close()
    return path, None
