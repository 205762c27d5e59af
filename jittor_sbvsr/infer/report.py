"""What an inference run shows: the lines of its log (one per output frame, each video's and the
run's averages, the end) and its progress bar (:class:`VideoProgress`).

The log of rank 0 only (the others get :class:`Quiet`); its last line says
how the run ended (``completed: ...``, the ``error: ...`` that stopped it,
or ``interrupted (Ctrl-C) ...``).
"""
import time

import numpy as np

from .. import runtime
from ..errors import UserError
from ..utils.progress import Bar, format_seconds


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


def averages(videos, rows, wins):
    """({video: (PSNR, SSIM)} of each scored video, (PSNR, SSIM) over every scored frame or None):
    the numbers of the log's average lines."""
    scored = {v.name: _scores(r) for v, r in zip(videos, per_video(rows, wins))
              if v.gt is not None and v.no_metric is None}
    each = {name: tuple(float(x) for x in np.mean(r, axis=0)) for name, r in scored.items()}
    if not scored:
        return each, None
    return each, tuple(float(x) for x in np.mean(np.concatenate(list(scored.values())), axis=0))


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
    each, total = averages(videos, rows, wins)
    unscored = [v.name for v in videos if v.gt is not None and v.no_metric is not None]
    if total is not None:
        n = sum(len(r) for v, r in zip(videos, per_video(rows, wins)) if v.name in each)
        log(f'# Total AVG-PSNR={total[0]:.5f}, AVG-SSIM={total[1]:.4f} ({n} frames'
            + (f'; not scored: {", ".join(unscored)}' if unscored else '') + ')')


class VideoProgress:
    """Progress of a run over videos of ``total`` output frames in all: one :class:`Bar`
    per video, whose values end with the ETA of the whole run."""

    def __init__(self, total, stream=None, interval=30.0, enabled=True):
        self.total, self.done = total, 0
        self.stream, self.interval, self.enabled = stream, interval, enabled
        self.t0 = time.perf_counter()  # host time: ETAs
        self._bar = None

    def video(self, name, n):
        """Start the bar of the next video, of ``n`` frames."""
        self.close()
        self._bar = Bar(n, desc=name, unit='frame', stream=self.stream, interval=self.interval,
                        enabled=self.enabled)

    def eta(self):
        """Seconds left for the whole run, from its pace so far (None before the first frame)."""
        if not self.done:
            return None
        return (time.perf_counter() - self.t0) / self.done * (self.total - self.done)  # host time: ETAs

    def update(self, **postfix):
        """One more frame of the current video; ``postfix`` values are shown as k=v."""
        self.done += 1
        self._bar.update(1, ', '.join([f'{k}={v}' for k, v in postfix.items()]
                                      + [f'{self.done}/{self.total} in all',
                                         f'total ETA {format_seconds(self.eta())}']))

    def close(self, ok=True):
        if self._bar is not None:
            self._bar.close(ok)
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(ok=exc_type is None)
        return False
