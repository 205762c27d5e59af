"""The inference engine: a loaded model run window by window over one video.

Apart from the run (run.py: validation and outputs), this file is what the
numbers depend on; tests and benchmarks drive it directly.
"""
import time

import numpy as np

from ..data.windows import frames_to_input
from ..errors import UserError
from ..utils.memory import format_size, is_out_of_memory


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


# Peak memory of one window beyond the loaded engine (bytes), fitted to the peak
# RSS of windows on the CPU: bench/window_memory.py, recipe weights, default
# engine, 2 threads; 48x64 to 180x320 LR untiled and 180x320 in 64- and
# 96-px tiles (two border windows), 540x960 untiled and in 192-px tiles (one
# window). With the two terms known from the shapes (cached frame features,
# tile blending) taken out, least squares gave 98 MiB + 483 B per frame
# pixel + 15.9 KB per tile pixel, within 13% of every run from 96x128 up
# (48x64: its whole 76 MiB is below the fixed term). The constants below are
# that fit raised to lie above every measured run, the features counted for
# all n_seq frames (a window holds at most that many).
WINDOW_FIXED_BYTES = 128 * 2 ** 20
FRAME_BYTES_PER_PIXEL = 600        # whole-frame work: input, kernel, flows, pyramids
TILE_BYTES_PER_PIXEL = 18500       # one tile's reconstruction, its HR layers above all
BLEND_BYTES_PER_PIXEL = 16 * 44    # tiled: float64 sum (3) and weights (1), float32 result (3), per HR px


def window_bytes(h, w, tile=0, overlap=16, keep_features=True, n_seq=5, n_feat=128):
    """Conservative peak memory (bytes) of one window of h x w LR frames in ``tile`` tiles.

    Fixed + FRAME_BYTES_PER_PIXEL x h x w + TILE_BYTES_PER_PIXEL x the
    largest tile's LR pixels (tile 0: the whole frame), plus the frame
    features (n_feat float32 a pixel for each of n_seq frames: over every
    tile when kept across windows, ``keep_features``; else over one tile) and,
    when tiled, the blending arrays.
    """
    ys, xs = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    one = (ys[0][1] - ys[0][0]) * (xs[0][1] - xs[0][0])
    tiled = len(ys) * len(xs) > 1
    covered = sum(e - s for s, e in ys) * sum(e - s for s, e in xs) if keep_features else one
    return int(WINDOW_FIXED_BYTES + FRAME_BYTES_PER_PIXEL * h * w + TILE_BYTES_PER_PIXEL * one
               + 4 * n_feat * n_seq * covered + (BLEND_BYTES_PER_PIXEL * h * w if tiled else 0))


def min_tile(overlap):
    """The smallest tile the budget may choose: twice the overlap and at least 32 LR pixels."""
    return max(2 * overlap + 8, 32)


def choose_tile(h, w, budget, overlap=16):
    """(tile, keep_features) for h x w frames under ``budget`` bytes.

    Whole frames when they fit; else the largest tile (a multiple of 8) whose
    window fits with the frame features kept across windows; else the
    largest that fits with them recomputed for each tile (same output, more
    work); else the smallest tile, recomputing.
    """
    if window_bytes(h, w, 0, overlap) <= budget:
        return 0, True
    lo = min_tile(overlap)
    for keep in (True, False):
        for tile in range(max(h, w) // 8 * 8, lo - 1, -8):
            if window_bytes(h, w, tile, overlap, keep) <= budget:
                return tile, keep
    return lo, False


def _default_budget():
    """--max_memory's default: utils/memory.py's share of what the device has free now."""
    import jittor as jt
    from .. import dist
    from ..utils.memory import default_budget
    return default_budget('cuda' if jt.flags.use_cuda else 'cpu', dist.world_size())


def run_budget(given, tile, earlier=None):
    """The memory budget (bytes; None: no limit) a run's tiles are chosen from: ``given``
    (--max_memory); none with a fixed ``tile``; else the ``earlier`` one of the run a --resume
    continues, so that it tiles as that run did; else the default, rank 0's under mpirun, so that
    every rank tiles alike (free memory moves between reads)."""
    if given is not None or tile:
        return given
    if earlier is not None:
        return int(earlier)
    from .. import dist
    value = _default_budget() if dist.rank() == 0 else None
    value = dist.broadcast_text(str(value))
    return None if value == 'None' else int(value)


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

    ``max_memory`` (bytes; ``tile`` 0): the tile is the largest whose window
    fits it by :func:`window_bytes` (untiled, so bit for bit today's output,
    when the whole frame fits), chosen per video. A window that still runs
    out of device memory is retried once in smaller tiles (half the side,
    frame features recomputed per tile), with one line to ``warn``; these
    smaller tiles are then kept for the rest of the video.
    """

    def __init__(self, net, n_seq=5, reuse=True, tile=0, overlap=16, fused=True, compose=True,
                 layout='auto', warn=None, winograd=True, max_memory=None):
        check_tiles(int(tile or 0), int(overlap))
        from ..models.deploy import InferenceNet
        self.net = net
        self.model = InferenceNet(net, fused=fused, compose=compose, layout=layout, warn=warn, winograd=winograd)
        self.warn = self.model.warn
        self.n_seq = n_seq
        self.reuse = reuse
        self.tile = int(tile or 0)
        self.overlap = int(overlap)
        self.max_memory = _default_budget() if max_memory is None else max_memory
        self.plan = None  # (h, w, tile) of the last video: the tile it ran with

    def tiles(self, h, w, tile=None):
        """[((y0, y1), (x0, x1)), ...] LR tiles of an h x w frame (``tile``: default the engine's)."""
        tile = self.tile if tile is None else tile
        return [(ys, xs) for ys in tile_spans(h, tile, self.overlap)
                for xs in tile_spans(w, tile, self.overlap)]

    def tile_for(self, h, w):
        """(tile, keep_features) of an h x w video: --tile if given, else the budget's choice (one
        note line when that is tiles)."""
        if self.tile or not self.max_memory:
            return self.tile, True
        tile, keep = choose_tile(h, w, self.max_memory, self.overlap)
        if tile:
            need = window_bytes(h, w, tile, self.overlap, keep)
            self.warn(f'note: {h}x{w} LR frames run in {tile}x{tile} tiles'
                      + ('' if keep else ', frame features recomputed for each tile,')
                      + f' to fit the memory budget of {format_size(self.max_memory)} (~{format_size(need)} a window)'
                      + ('' if need <= self.max_memory else '; it may not fit even so'))
        return tile, keep

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
        tiles, retried = None, False
        for k in range(start, len(windows) if stop is None else stop):
            window = source.window(k)
            if tiles is None:
                hw = window[0].shape[:2]
                tile, keep = self.tile_for(*hw)  # keep: frame features across windows
                tiles = self.tiles(*hw, tile)
            jt.sync_all(True)
            t0 = time.perf_counter()
            while True:
                try:
                    recons_np, kernel_np = self._window(window, windows, k, feats, pyramids, tiles, hw, keep)
                    break
                except Exception as e:
                    if not is_out_of_memory(e):
                        raise
                    tile = self._smaller(e, k, *hw, tile, retried)
                    tiles, retried, keep = self.tiles(*hw, tile), True, False
                    feats.clear()  # keyed by tile number: the old tiles' features are no use now
                    jt.sync_all(True)
                    jt.gc()
            self.plan = (*hw, tile)
            jt.sync_all(True)
            yield k, recons_np, kernel_np, time.perf_counter() - t0

    def _smaller(self, err, k, h, w, tile, retried):
        """The tile to retry window k in after ``err`` (out of memory): half the side, once a video."""
        side = tile if 0 < tile < max(h, w) else max(h, w)
        new = max(side // 2, min_tile(self.overlap))
        if retried or new >= side:
            raise UserError(f'out of memory in window {k} of a {h}x{w} video even in {side}x{side} LR tiles; '
                            'give a smaller --max_memory or --tile, or free memory') from None
        why = (str(err).strip().splitlines() or [type(err).__name__])[-1][:100]
        where = f'{side}x{side} LR tiles' if 0 < tile < max(h, w) else 'whole frames'
        self.warn(f'warning: window {k} ran out of memory in {where} ({why}); '
                  f'retrying it and the rest of this video in {new}x{new} tiles')
        return new

    def _window(self, window, windows, k, feats, pyramids, tiles, hw, keep=True):
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
                recons_np = self._recons_tiled(xs, idx, feats, tiles, flows, *hw, keep)
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

    def _recons_tiled(self, xs, idx, cache, tiles, flows, h, w, keep=True):
        s = self.net.scale
        out = np.zeros((1, 3, h * s, w * s), np.float64)
        wsum = np.zeros((h * s, w * s), np.float64)
        for t, ((y0, y1), (x0, x1)) in enumerate(tiles):
            xt = [v[:, :, y0:y1, x0:x1] for v in xs]
            ft = {key: f[:, :, y0:y1, x0:x1] for key, f in flows.items()}
            r = self._recons(xt, idx, cache, t, ft).numpy()
            if not keep:  # over budget: this tile's features are recomputed in the next window
                for key in [key for key in cache if key[1] == t]:
                    del cache[key]
            wt = np.outer(_ramp((y0, y1), h, self.overlap, s), _ramp((x0, x1), w, self.overlap, s))
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] += r * wt
            wsum[y0 * s:y1 * s, x0 * s:x1 * s] += wt
        out /= wsum  # in place: one HR-sized float64 array less at the peak
        return out.astype(np.float32)


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
