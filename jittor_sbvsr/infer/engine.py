"""The inference engine: a loaded model run window by window over one video.

Apart from the run (run.py: validation and outputs), this file is what the
numbers depend on; tests and benchmarks drive it directly.
"""
import time

import numpy as np

from ..data.windows import frames_to_input
from ..errors import UserError


def tile_spans(n, tile, overlap):
    """(start, stop) of the tiles along an axis of ``n`` LR pixels.

    Tiles are ``tile`` long and step by ``tile - overlap``; the last one ends
    at ``n``. ``tile`` 0 (off) or >= n: one span, the whole axis.
    """
    if tile <= 0 or tile >= n:
        return [(0, n)]
    if not 0 <= overlap < tile:
        raise UserError(f'--tile_overlap must be >= 0 and smaller than --tile ({overlap} vs {tile})')
    starts = list(range(0, n - tile, tile - overlap)) + [n - tile]
    return [(s, s + tile) for s in starts]


def _ramp(span, n, overlap, scale):
    """Blending weights of one tile along one axis, at HR: linear ramps over
    the overlap on each side that has a neighbour, 1 elsewhere."""
    (s, e), r = span, max(overlap * scale, 1)
    i = np.arange((e - s) * scale, dtype=np.float64) + 0.5
    w = np.ones_like(i)
    if s > 0:
        w = np.minimum(w, i / r)
    if e < n:
        w = np.minimum(w, (i[::-1]) / r)
    return w


def check_tiles(tile, overlap):
    """The tile flags, checked before anything is loaded."""
    if tile < 0 or overlap < 0:
        raise UserError('--tile and --tile_overlap must be >= 0')
    if tile and overlap >= tile:
        raise UserError(f'--tile_overlap ({overlap}) must be smaller than --tile ({tile})')


class VideoSR:
    """Runs a loaded model window by window over one video, reusing work.

    The model is deployed once, here (models/deploy.py): with ``fused`` the
    ResBlock chains and the layered tail run as fused oneDNN ops on the CPU,
    with ``compose`` the upsampling and output convolutions as one LR
    convolution; each fast path is self-checked against Jittor's plain ops
    and dropped, with one warning line, if it fails on this machine. All give
    the same output to float rounding. Weights loaded into ``net`` later are
    not seen: make a new engine.

    With ``reuse`` each frame's ``frame_features`` and PWC-Net feature
    pyramid are computed once and kept while windows still need them, and a
    window that holds the same frame twice (border windows) estimates its
    flow once.

    With ``tile`` > 0 (LR pixels) the reconstruction runs on overlapping
    ``tile`` x ``tile`` crops whose HR outputs are blended with linear ramps
    over the ``overlap``; this bounds the memory of the HR layers. The blur
    kernel and the flows are still estimated on whole frames (the kernel is
    then identical, and PWC-Net sees the whole motion); feature reuse works
    per tile. A tile as large as the frame gives exactly the untiled output.
    """

    def __init__(self, net, n_seq=5, reuse=True, tile=0, overlap=16, fused=True, compose=True,
                 layout='auto', warn=None, winograd=True):
        check_tiles(int(tile or 0), int(overlap))
        from ..models.deploy import InferenceNet
        self.net = net
        self.model = InferenceNet(net, fused=fused, compose=compose, layout=layout, warn=warn, winograd=winograd)
        self.n_seq = n_seq
        self.reuse = reuse
        self.tile = int(tile or 0)
        self.overlap = int(overlap)

    def tiles(self, h, w):
        """[((y0, y1), (x0, x1)), ...] LR tiles of an h x w frame."""
        return [(ys, xs) for ys in tile_spans(h, self.tile, self.overlap)
                for xs in tile_spans(w, self.tile, self.overlap)]

    def windows(self, frames, windows, start=0, stop=None):
        """Yield (window index, recons [1,3,H,W] float32, kernel [k,k], seconds).

        ``frames``: a list of uint8 HxWx3 frames, or a :class:`FrameSource`
        that reads them as the windows need them (same output, bounded memory).
        ``start`` / ``stop``: only windows start..stop-1 (a share of the video
        for one MPI rank); each gives the same bits as in a run over them all.
        """
        import jittor as jt
        source = frames if isinstance(frames, FrameSource) else FrameSource(iter(frames), windows, keep=True)
        feats, pyramids = {}, {}  # {(frame, tile): features}, {frame: PWC-Net pyramid}
        tiles = None
        for k in range(start, len(windows) if stop is None else stop):
            window = source.window(k)
            if tiles is None:
                hw = window[0].shape[:2]
                tiles = self.tiles(*hw)
            jt.sync_all(True)
            t0 = time.perf_counter()
            recons_np, kernel_np = self._window(window, windows, k, feats, pyramids, tiles, hw)
            jt.sync_all(True)
            yield k, recons_np, kernel_np, time.perf_counter() - t0

    def _window(self, window, windows, k, feats, pyramids, tiles, hw):
        """Window k's (recons, kernel) as numpy; drops the cached frames no later window needs."""
        import jittor as jt
        idx = windows[k]
        with jt.no_grad():
            x = jt.array(frames_to_input(window))
            xs = [x[:, j] for j in range(self.n_seq)]
            kernel = self.net.kernel_net(jt.concat(xs, 1))
            if self.reuse:
                for j, i in enumerate(idx):
                    if i not in pyramids:
                        pyramids[i] = _computed(self.net.flow_net.pyramid(xs[j]))
                flows = self.net.neighbour_flows(xs, keys=idx, pyramids=pyramids)
            else:
                flows = self.net.neighbour_flows(xs)
            if len(tiles) == 1:
                recons_np = self._recons(xs, idx, feats, 0, flows).numpy()
            else:
                recons_np = self._recons_tiled(xs, idx, feats, tiles, flows, *hw)
            if self.reuse:
                later = set(i for wi in windows[k + 1:k + self.n_seq] for i in wi)
                for key in [key for key in feats if key[0] not in later]:
                    del feats[key]
                for key in [key for key in pyramids if key not in later]:
                    del pyramids[key]
            return recons_np, kernel.numpy()[0, 0]

    def _recons(self, xs, idx, cache, t, flows):
        """The reconstruction of one window (or of tile ``t`` of it)."""
        if not self.reuse:
            return self.model.recons_forward(xs, flows=flows)
        feats = []
        for j, i in enumerate(idx):
            if (i, t) not in cache:
                cache[(i, t)] = _computed(self.model.frame_features(xs[j]))
            feats.append(cache[(i, t)])
        return self.model.recons_forward(xs, feats, keys=idx, flows=flows)

    def _recons_tiled(self, xs, idx, cache, tiles, flows, h, w):
        s = self.net.scale
        out = np.zeros((1, 3, h * s, w * s), np.float64)
        wsum = np.zeros((h * s, w * s), np.float64)
        for t, ((y0, y1), (x0, x1)) in enumerate(tiles):
            xt = [v[:, :, y0:y1, x0:x1] for v in xs]
            ft = {key: f[:, :, y0:y1, x0:x1] for key, f in flows.items()}
            r = self._recons(xt, idx, cache, t, ft).numpy()
            wt = np.outer(_ramp((y0, y1), h, self.overlap, s), _ramp((x0, x1), w, self.overlap, s))
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] += r * wt
            wsum[y0 * s:y1 * s, x0 * s:x1 * s] += wt
        return (out / wsum).astype(np.float32)


def _computed(v):
    """``v`` (a Var or a list of them) computed now, on its own.

    A cached frame feature is then the same bits whichever window first
    needed it: computed lazily inside a window's graph, Jittor would fuse it
    with that window's other ops, which moves the last float bit. So a run
    that starts mid-video (an MPI rank's share) gives the bits of a whole run.
    """
    import jittor as jt
    jt.sync(list(v) if isinstance(v, (list, tuple)) else [v])
    return v


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
