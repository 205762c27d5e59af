"""A video's frames read in window order, as the sliding windows ask for them: memory is a window's
frames, not the video's. :class:`FrameSource` knows the windows in advance (a video whose frame
count the checks found); :class:`FrameStream` learns them as frames arrive (the Python API's
iterables, whose length is known only at their end).
"""
import numpy as np

from ..data.folders import check_same_size
from ..data.windows import window_indices
from ..errors import UserError


class FrameSource:
    """A video's frames read in order as the sliding windows ask for them.

    ``frames``: an iterator of uint8 HxWx3 frames 0, 1, ... (a VideoReader, or
    frame files read one by one); ``windows``: the window_indices. Window k
    reads up to its last frame and drops the frames no later window holds, so
    memory is a window's frames, not the video's. ``keep`` keeps everything
    (a list given to VideoSR.windows is held by the caller anyway). ``first``:
    the iterator starts at that frame (a run over later windows only).
    """

    def __init__(self, frames, windows, keep=False, first=0):
        self._it = iter(frames)
        self._windows = windows
        self._held = {}
        self._next = first
        self._last_use = {}
        for k, w in enumerate(windows):
            for i in w:
                self._last_use[i] = k
        self._keep = keep

    def window(self, k):
        """The frames of window k (a list, in the window's order)."""
        idx = self._windows[k]
        while self._next <= max(idx):
            try:
                frame = next(self._it)
            except StopIteration:
                raise ValueError(f'the frame source ended after {self._next} frames; '
                                 f'window {k} needs frame {max(idx)}') from None
            if self._last_use.get(self._next, -1) >= k:
                self._held[self._next] = frame
            self._next += 1
        out = [self._held[i] for i in idx]
        if not self._keep:
            for i in [i for i in self._held if self._last_use[i] <= k]:
                del self._held[i]
        return out


class FrameStream(FrameSource):
    """The windows (``stream[k]``, ``stream[a:b]``) and frames (``window(k)``) of ``frames``, an
    iterable of uint8 HxWx3 arrays of unknown length: window k is known once the frames it
    holds have come, or the iterable has ended (its border windows repeat the last frames). The
    engine asks for the next ``n_seq - 1`` windows' indices, so with border windows at most
    ``n_seq + n_seq // 2`` frames are read ahead of the SR frame being made; ``window(k)`` is None
    past the last window. A frame of another size or kind is a UserError naming its index.
    """

    def __init__(self, frames, n_seq=5, border=True):
        super().__init__(frames, [], keep=False)
        self.n_seq, self.border, self._n, self._first = n_seq, border, None, None

    def _pull(self, i):
        """Read frames until frame ``i`` is in (or the iterable has ended)."""
        while self._n is None and self._next <= i:
            try:
                frame = np.asarray(next(self._it))
            except StopIteration:
                self._n = self._next
                break
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise UserError(f'frame {self._next}: an HxWx3 uint8 array (RGB) is needed, got '
                                f'shape {frame.shape} {frame.dtype}')
            if self._first is None:
                self._first = frame.shape
            check_same_size(f'frame {self._next}', frame.shape, 'frame 0', self._first)
            self._held[self._next] = frame
            self._next += 1

    def _window(self, k):
        """Window k's frame indices, or None past the last window."""
        # window k is known once its last frame came (border: k + n_seq // 2, past which only the
        # end's padding could change it), or the end did
        last = k + (self.n_seq // 2 if self.border else self.n_seq - 1)
        self._pull(last)
        count = self._n if self._n is not None else last + 1
        # the window indices of frames base.. (base: far enough back not to touch the start's padding)
        base = max(0, k - self.n_seq)
        if self._n is not None and self._n <= base:
            return None
        wins = window_indices(count - base, self.n_seq, border=self.border)
        return [base + i for i in wins[k - base]] if k - base < len(wins) else None

    def __getitem__(self, k):
        if isinstance(k, slice):
            found = []
            for j in range(k.start, k.stop):
                w = self._window(j)
                if w is None:
                    break
                found.append(w)
            return found
        return self._window(k)

    def window(self, k):
        """The frames of window k (a list, in the window's order); None past the last window. The
        frames no later window holds are dropped."""
        idx = self._window(k)
        if idx is None:
            return None
        out = [self._held[i] for i in idx]
        for i in [i for i in self._held if i < min(idx)]:
            del self._held[i]
        return out
