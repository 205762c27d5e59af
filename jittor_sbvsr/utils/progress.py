"""Progress bars that do not trample the log's lines (utils/log.py).

One bar, :class:`Bar`, serves training (epochs, evaluation), inference
(infer/report.py: :class:`VideoProgress`, a bar per video) and tools/make_blurdown_dataset.py.
On a terminal it is tqdm's bar, redrawn in place; anywhere else (CI logs,
files) a plain line at most every ``interval`` seconds and one at the end,
never a line per item.
"""
import math
import sys
import time

__all__ = ['Bar', 'format_seconds']


def format_seconds(s):
    """'MM:SS', or 'H:MM:SS' past an hour; '--:--' when unknown."""
    if s is None or not math.isfinite(s) or s < 0:
        return '--:--'
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f'{h}:{m:02d}:{sec:02d}' if h else f'{m:02d}:{sec:02d}'


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _plural(unit):
    return unit + ('es' if unit.endswith(('s', 'sh', 'ch', 'x')) else 's')


class Bar:
    """Progress over ``total`` items (batches, windows, frames) of ``unit``.

    On a terminal: tqdm's bar, redrawn in place. Elsewhere: a plain line at
    most every ``interval`` seconds while items remain, and one when the bar
    closes (none for a bar that did nothing). ``enabled=False`` (MPI ranks
    other than 0) prints nothing. As a context manager, a bar left by an
    exception is cleared and prints no final line, so an error line stands
    alone.
    """

    def __init__(self, total, desc='', unit='it', stream=None, interval=30.0, enabled=True):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.text = 0, ''
        self.stream = sys.stderr if stream is None else stream
        self.enabled, self.interval = bool(enabled), interval
        self.t0 = self._last = time.perf_counter()  # host time: ETAs
        self.closed = False
        self._tqdm = None
        if self.enabled and _isatty(self.stream):
            from tqdm import tqdm
            self._tqdm = tqdm(total=total, desc=desc, file=self.stream, unit=unit, dynamic_ncols=True,
                              mininterval=0.2, leave=True)

    def update(self, n=1, text=None):
        """Advance by ``n`` items; ``text`` (e.g. 'loss=0.0123') replaces the values shown."""
        self.n += n
        if text is not None:
            self.text = text
        if self._tqdm is not None:
            if text is not None:
                self._tqdm.set_postfix_str(text, refresh=False)
            self._tqdm.update(n)
        elif self.enabled and (self.total is None or self.n < self.total) \
                and time.perf_counter() - self._last >= self.interval:  # host time: ETAs
            self._line(final=False)

    def _line(self, final):
        self._last = time.perf_counter()  # host time: ETAs
        elapsed = self._last - self.t0
        count = f'{self.n}/{self.total}' if self.total is not None else f'{self.n}'
        parts = [f'{self.desc}: {count} {_plural(self.unit)}']
        if final:
            per = elapsed / self.n
            rate = f'{per:.2f} s/{self.unit}' if per >= 1 else f'{1 / max(per, 1e-9):.2f} {_plural(self.unit)}/s'
            parts[0] += f' in {format_seconds(elapsed)} ({rate})'
        else:
            eta = elapsed / self.n * (self.total - self.n) if self.total is not None and self.n else None
            parts.append(f'{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}')
        if self.text:
            parts.append(self.text)
        try:
            self.stream.write(', '.join(parts) + '\n')
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must not stop the computation

    def close(self, ok=True):
        """Finish: leave the final bar (terminal) or print the final line; ``ok=False``: neither."""
        if self.closed:
            return
        self.closed = True
        if self._tqdm is not None:
            if not ok:
                self._tqdm.leave = False  # tqdm then clears its line
            self._tqdm.close()
        elif self.enabled and ok and self.n:
            self._line(final=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(ok=exc_type is None)
        return False
