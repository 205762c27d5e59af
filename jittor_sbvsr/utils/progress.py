"""Progress bars and a line logger that do not trample each other.

``VideoProgress`` (inference) is tqdm's bar, one per video, with the ETA over
all videos. ``Progress`` is the older hand-written bar the trainer and
tools/make_blurdown_dataset.py still use (switching them is a separate change).

On a terminal the bar redraws one line in place with '\\r'; anywhere else (CI
logs, files) it stays silent until ``close()`` and then prints one summary
line, so logs do not fill with a line per frame. ``Logger`` clears any live
bar before printing and redraws it afterwards.
"""
import math
import os
import sys
import time

from ..errors import UserError

__all__ = ['Progress', 'VideoProgress', 'Logger', 'format_seconds']

_live = []  # bars currently drawn on a terminal, so Logger can step around them


def format_seconds(s):
    """'MM:SS', or 'H:MM:SS' past an hour; '--:--' when unknown."""
    if s is None or not math.isfinite(s) or s < 0:
        return '--:--'
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f'{h}:{m:02d}:{sec:02d}' if h else f'{m:02d}:{sec:02d}'


def _format_value(v):
    if isinstance(v, float):
        return f'{v:.5g}'
    return str(v)


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80


class Progress:
    """Progress over ``total`` items: count/total, elapsed, ETA and a postfix.

    ``min_interval`` limits terminal redraws (seconds); the last item always
    redraws. ``enabled=False`` draws and prints nothing (ranks other than 0).
    """

    def __init__(self, total, desc='', stream=None, min_interval=0.1, enabled=True):
        self.total = total
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.min_interval = min_interval
        self.n = 0
        self.postfix = {}
        self.start = time.monotonic()
        self.enabled = bool(enabled)
        self.tty = self.enabled and _isatty(self.stream)
        self.closed = False
        self._width = 0
        self._last_draw = -math.inf
        if self.tty:
            _live.append(self)
            self._draw()

    # -- state
    def update(self, n=1, **postfix):
        """Advance by ``n`` items; keyword arguments replace postfix values (e.g. psnr=...)."""
        self.n += n
        self.postfix.update(postfix)
        if self.tty and not self.closed:
            now = time.monotonic()
            done = self.total is not None and self.n >= self.total
            if done or now - self._last_draw >= self.min_interval:
                self._draw(now)

    def set_postfix(self, **postfix):
        self.postfix.update(postfix)
        if self.tty and not self.closed:
            self._draw()

    def elapsed(self):
        return time.monotonic() - self.start

    def format(self, final=False):
        """The bar's text; the final form shows the rate instead of the ETA."""
        elapsed = self.elapsed()
        parts = [f'{self.desc}:' if self.desc else '']
        if self.total:
            pct = 100.0 * self.n / self.total
            parts.append(f'{self.n}/{self.total} {pct:3.0f}%')
        else:
            parts.append(f'{self.n}')
        if final:
            if self.n and elapsed > 0:
                rate = self.n / elapsed
                speed = f'{rate:.2f} it/s' if rate >= 1 else f'{1 / rate:.2f} s/it'
            else:
                speed = '? it/s'
            parts.append(f'[{format_seconds(elapsed)}, {speed}]')
        else:
            eta = None
            if self.total and self.n:
                eta = elapsed / self.n * max(self.total - self.n, 0)
            parts.append(f'[{format_seconds(elapsed)}<{format_seconds(eta)}]')
        if self.postfix:
            parts.append(', '.join(f'{k}={_format_value(v)}' for k, v in self.postfix.items()))
        return ' '.join(p for p in parts if p)

    # -- terminal drawing
    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must not stop the computation

    def _draw(self, now=None, final=False):
        text = self.format(final=final)
        limit = max(_columns(self.stream) - 1, 10)
        if len(text) > limit:  # a wrapped line could not be overwritten with '\r'
            text = text[:limit - 3] + '...'
        pad = ' ' * max(self._width - len(text), 0)
        self._write('\r' + text + pad)
        self._width = len(text)
        self._last_draw = time.monotonic() if now is None else now

    def clear(self):
        """Blank the bar's line (terminal only) so another line can be printed."""
        if self.tty and self._width and not self.closed:
            self._write('\r' + ' ' * self._width + '\r')
            self._width = 0

    def refresh(self):
        if self.tty and not self.closed:
            self._draw()

    def close(self):
        """Finish: leave the final bar on the terminal, or print the one summary line."""
        if self.closed:
            return
        if not self.enabled:
            pass
        elif self.tty:
            self._draw(final=True)
            self._write('\n')
            if self in _live:
                _live.remove(self)
        else:
            self._write(self.format(final=True) + '\n')
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class VideoProgress:
    """Progress of a run over videos of ``total`` output frames in all.

    On a terminal: one tqdm bar per video, redrawn in place, its postfix the
    ETA of the whole run. Elsewhere (CI logs, files): a plain line at most
    every ``interval`` seconds and one at the end of each video, never one
    per frame. ``enabled=False`` prints nothing.
    """

    def __init__(self, total, stream=None, interval=30.0, enabled=True):
        self.total, self.done = total, 0
        self.stream = sys.stderr if stream is None else stream
        self.tty = enabled and _isatty(self.stream)
        self.enabled, self.interval = enabled, interval
        self.t0 = time.perf_counter()
        self._bar = None
        self._name, self._n, self._k, self._last = '', 0, 0, self.t0

    def video(self, name, n):
        """Start the bar of the next video, of ``n`` frames."""
        self._end_video()
        self._name, self._n, self._k = name, n, 0
        if self.tty:
            from tqdm import tqdm
            self._bar = tqdm(total=n, desc=name, file=self.stream, unit='frame', dynamic_ncols=True,
                             mininterval=0.2, leave=True)

    def eta(self):
        """Seconds left for the whole run, from its pace so far (None before the first frame)."""
        if not self.done:
            return None
        return (time.perf_counter() - self.t0) / self.done * (self.total - self.done)

    def update(self, **postfix):
        """One more frame of the current video."""
        self.done += 1
        self._k += 1
        text = ', '.join([f'{k}={v}' for k, v in postfix.items()] + [f'total ETA {format_seconds(self.eta())}'])
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update()
        elif self.enabled and time.perf_counter() - self._last >= self.interval:
            self._line(text)

    def _line(self, text):
        self._last = time.perf_counter()
        try:
            self.stream.write(f'{self._name}: {self._k}/{self._n} frames, {self.done}/{self.total} in all, '
                              f'{format_seconds(self._last - self.t0)} elapsed, {text}\n')
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _end_video(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and not self.tty and self._n:
            self._line(f'total ETA {format_seconds(self.eta())}')
        self._n = 0

    def close(self):
        self._end_video()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _tqdm_write_mode(stream):
    """tqdm's bars cleared around a line written to ``stream`` (a no-op without tqdm)."""
    tqdm = sys.modules.get('tqdm')
    if tqdm is None:
        import contextlib
        return contextlib.nullcontext()
    return tqdm.tqdm.external_write_mode(file=stream)


class Logger:
    """Print lines and append them to a log file (UTF-8, flushed per line).

    Live progress bars are cleared before the line is printed and redrawn
    after, so the two can be mixed on one terminal.
    """

    def __init__(self, path=None, stream=None):
        self.stream = sys.stdout if stream is None else stream
        self.path = None if path is None else os.fspath(path)
        self._file = None
        if self.path is not None:
            folder = os.path.dirname(self.path)
            try:
                if folder:
                    os.makedirs(folder, exist_ok=True)
                self._file = open(self.path, 'a', encoding='utf-8')
            except OSError as e:
                raise UserError(f'{self.path}: cannot open log file ({e.strerror or e})') from None

    def log(self, msg=''):
        text = str(msg)
        bars = [b for b in _live if not b.closed]
        for b in bars:
            b.clear()
        try:
            with _tqdm_write_mode(self.stream):
                self.stream.write(text + '\n')
                self.stream.flush()
        except (OSError, ValueError):
            pass
        for b in bars:
            b.refresh()
        if self._file is not None:
            self._file.write(text + '\n')
            self._file.flush()

    __call__ = log

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
