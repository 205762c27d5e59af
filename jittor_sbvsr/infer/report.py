"""The lines of an inference log: one per output frame, each video's and the run's averages, the end.

The log of rank 0 only (the others get :class:`Quiet`); its last line says
how the run ended (``completed: ...``, the ``error: ...`` that stopped it,
or ``interrupted (Ctrl-C) ...``).
"""
import numpy as np

from .. import runtime
from ..errors import UserError


class Quiet:
    """The log of the ranks other than 0: they say nothing."""
    path = None

    def __call__(self, line):
        pass

    def close(self):
        pass


def ending(err, done, total):
    """The log's last line for a run that stopped on ``err``."""
    if isinstance(err, KeyboardInterrupt) or runtime.interrupted():
        return f'interrupted (Ctrl-C) after {done} of {total} frames'
    if isinstance(err, (UserError, runtime.RuntimeSetupError)):
        return runtime.error_line(err)
    return f'failed after {done} of {total} frames: {type(err).__name__}: {" ".join(str(err).split())[:300]}'


def append_line(path, line):
    """One more line at the end of the (closed) log file, not on the screen: guarded prints it there."""
    if path is None:
        return
    try:
        with open(path, 'a', encoding='utf-8') as f:
            f.write(line + '\n')
    except OSError:
        pass


def per_video(rows, wins):
    """``rows`` (one per window of the run) cut into each video's."""
    ends = np.cumsum([len(w) for w in wins])
    return [rows[e - len(w):e] for w, e in zip(wins, ends)]


def frame_line(v, stem, row):
    """The log line of one output frame; ``row``: PSNR, SSIM, seconds."""
    line = f'> {v.name}-{stem}'
    if v.gt is not None and v.no_metric is None:
        line += f' PSNR={row[0]:.5f}, SSIM={row[1]:.4f}'
    elif v.gt is not None:
        line += ' PSNR/SSIM: none (frames too small)'
    return f'{line} forward_time={row[2]:.3f}s'


def _scores(rows):
    """A video's (PSNR, SSIM) rows as the contiguous array the averages are taken over."""
    return np.ascontiguousarray(rows[:, :2])


def log_video(log, v, rows):
    """The average line of a video with ground truth."""
    if v.gt is None:
        return
    if v.no_metric is None:
        p, q = np.mean(_scores(rows), axis=0)
        log(f'# Video:{v.name} AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f}')
    else:
        log(f'# Video:{v.name} no PSNR/SSIM: {v.no_metric}')


def log_total(log, videos, rows, wins):
    """The average over every scored frame of the run."""
    scored = [_scores(r) for v, r in zip(videos, per_video(rows, wins)) if v.gt is not None and v.no_metric is None]
    unscored = [v.name for v in videos if v.gt is not None and v.no_metric is not None]
    if scored:
        allv = np.concatenate(scored)
        p, q = np.mean(allv, axis=0)
        log(f'# Total AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f} ({len(allv)} frames'
            + (f'; not scored: {", ".join(unscored)}' if unscored else '') + ')')
