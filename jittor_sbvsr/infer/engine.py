"""The inference engine: a loaded model run window by window over one video.

Apart from the run (run.py: validation and outputs), this file is what the
numbers depend on; tests and benchmarks drive it directly.
"""
import time

import numpy as np

from ..data.windows import frames_to_input
from .frames import FrameSource
from ..errors import UserError
from ..utils.memory import format_size, is_out_of_memory
from .memory_plan import current_device, default_run_budget, min_tile, plan_window, tile_spans, untiled_bytes


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

    ``max_memory`` (bytes; ``tile`` 0): the tile is the largest whose window
    fits it by memory_plan.py's ``window_bytes`` on the device the network
    runs on (untiled, so bit for bit the whole-frame output, when the whole
    frame fits), chosen per video. A window that still runs
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
        self.max_memory = default_run_budget() if max_memory is None else max_memory
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
        plan = plan_window(h, w, current_device(), self.max_memory, self.overlap)
        if plan.tile:
            self.warn(f'note: {h}x{w} LR frames run in {plan.tile}x{plan.tile} tiles'
                      + ('' if plan.keep else ', frame features recomputed for each tile,')
                      + f' to fit the memory budget of {format_size(self.max_memory)}'
                      + f' (~{format_size(plan.peak)} a window, {plan.tiles} tiles)')
        for problem in plan.problems:
            self.warn(f'warning: {problem}')
        return plan.tile, plan.keep

    def windows(self, frames, windows, start=0, stop=None):
        """Yield (window index, recons [1,3,H,W] float32, kernel [k,k], seconds).

        ``frames``: a list of uint8 HxWx3 frames, or a :class:`FrameSource`
        that reads them as the windows need them (same output, bounded memory;
        frames.py, also for a stream of frames of unknown length).
        ``start`` / ``stop``: only windows start..stop-1 (a share of the video
        for one MPI rank); each gives the same bits as in a run over them all.
        """
        import jittor as jt
        source = frames if isinstance(frames, FrameSource) else FrameSource(iter(frames), windows, keep=True)
        # a FrameStream is its own windows, known as its frames come; its window() is None at its end
        feats, pyramids = {}, {}  # {(frame, tile): features}, {frame: PWC-Net pyramid}
        tiles, retried = None, False
        for k in range(start, len(windows) if stop is None else stop):
            window = source.window(k)
            if window is None:
                return
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
                            'give a smaller --max_memory or --tile, or free memory; the kernel and flows run on '
                            f'whole frames (~{format_size(untiled_bytes(h, w))}), which tiles do not shrink: if '
                            'the device has less, ' + ('run with --device cpu or ' if current_device() == 'cuda' else '')
                            + 'downscale the input') from None
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
                flows = self.net.neighbour_flows(xs, keys=idx, pyramids=pyramids, fast=self.model.flow_layers)
            else:
                flows = self.net.neighbour_flows(xs, fast=self.model.flow_layers)
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
        def one(t, y0, y1, x0, x1):
            xt = [v[:, :, y0:y1, x0:x1] for v in xs]
            ft = {key: f[:, :, y0:y1, x0:x1] for key, f in flows.items()}
            r = self._recons(xt, idx, cache, t, ft).numpy()
            if not keep:  # over budget: this tile's features are recomputed in the next window
                for key in [key for key in cache if key[1] == t]:
                    del cache[key]
            return r
        return blend_tiles(one, tiles, h, w, self.net.scale, self.overlap)


def blend_tiles(one, tiles, h, w, scale, overlap):
    """The HR image [1,3,H,W] float32 from ``one(t, y0, y1, x0, x1)``, tile t's HR output as numpy:
    tiles summed with linear ramps over their overlaps (float64, on the host), then normalised."""
    s = scale
    out = np.zeros((1, 3, h * s, w * s), np.float64)
    wsum = np.zeros((h * s, w * s), np.float64)
    for t, ((y0, y1), (x0, x1)) in enumerate(tiles):
        r = one(t, y0, y1, x0, x1)
        wt = np.outer(_ramp((y0, y1), h, overlap, s), _ramp((x0, x1), w, overlap, s))
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
