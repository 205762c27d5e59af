"""A line logger that prints and appends to a log file without trampling progress bars.

``Logger`` clears live bars (utils/progress.py) before printing a line and
redraws them afterwards (tqdm's ``external_write_mode``).
"""
import os
import sys

from ..errors import UserError

__all__ = ['Logger']


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
        try:
            with _tqdm_write_mode(self.stream):
                self.stream.write(text + '\n')
                self.stream.flush()
        except (OSError, ValueError):
            pass
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
