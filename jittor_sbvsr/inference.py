"""Super-resolve LR video folders with the reference's inference protocol.

One output per window of ``n_seq`` frames (border windows repeat the first
and last frames, see ``window_indices``); PSNR/SSIM on uint8 with a 4-pixel
crop when ground truth is given. Each frame's features are computed once per
video, not once per window: the output is the same, the work a fifth.
"""
import os
import time

import numpy as np

from . import runtime
from .data.frames import crop_to_multiple, frames_to_input, list_videos, read_frame, to_uint8, window_indices
from .errors import UserError
from .metrics.psnr_ssim import psnr_ssim
from .utils import Logger, Progress, ensure_dir, save_npy_atomic, save_png_atomic

# preset -> (dataset folder under dataset/, checkpoint stem under pretrain_models/)
PRESETS = {
    'Gaussian_REDS4': ('REDS4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_Vid4': ('Vid4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_SPMCS': ('SPMCS_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Realistic_REDS4': ('REDS4_BlurDown_Realistic', 'self_blind_vsr_realistic'),
}


def apply_preset(args, root):
    """Fill the paths of a --quick_test preset; fail listing what is missing."""
    if args.quick_test not in PRESETS:
        raise UserError(f"unknown --quick_test '{args.quick_test}' (known: {', '.join(PRESETS)})")
    data, stem = PRESETS[args.quick_test]
    args.input_path = os.path.join(root, 'dataset', data, 'LR_blurdown_x4')
    args.gt_path = os.path.join(root, 'dataset', data, 'HR')
    models = [os.path.join(root, 'pretrain_models', stem + ext) for ext in ('.pkl', '.pt')]
    args.model_path = next((m for m in models if os.path.isfile(m)), models[0])
    args.infer_flag = args.quick_test
    args.scale = 4
    missing = [p for p in (args.input_path, args.gt_path) if not os.path.isdir(p)]
    if not any(os.path.isfile(m) for m in models):
        missing.append(f'{models[0]} (or {os.path.basename(models[1])}, converted on the fly)')
    if missing:
        raise UserError(
            f"--quick_test {args.quick_test} needs: {'; '.join(missing)}. The test sets and checkpoints "
            'are those of the Self-Blind-VSR paper (download links in the README of github.com/csbhr/'
            'Self-Blind-VSR); put the test set under dataset/ and the model under pretrain_models/, '
            'or make a test set with tools/make_blurdown_dataset.py')


def prepare_demo(args, root):
    """--demo: a synthetic clip from scikit-image photos, end to end, no downloads.

    Uses the paper's checkpoint when it is in pretrain_models/, otherwise the
    deterministic recipe weights of the parity tests (not a trained model:
    the pipeline runs, the pictures are not better than bilinear).
    """
    from .data.synthetic import make_demo_videos
    demo = os.path.join(root, 'demo_results')
    data = os.path.join(demo, 'input')
    if not os.path.isdir(os.path.join(data, 'LR_blurdown_x4')):
        make_demo_videos(data, n_videos=2, n_frames=7, hr_size=(128, 192), seed=0)
    args.input_path = os.path.join(data, 'LR_blurdown_x4')
    args.gt_path = os.path.join(data, 'HR')
    args.result_path, args.infer_flag = demo, 'demo'
    args.border = args.save_kernel = True
    stem = os.path.join(root, 'pretrain_models', 'self_blind_vsr_realistic')
    found = [p for p in (stem + '.pkl', stem + '.pt') if os.path.isfile(p)]
    if found:
        args.model_path = found[0]
        return None
    from .io.checkpoint import save_state_atomic
    from .io.recipe import recipe_state
    from .models import PWC_Recons
    args.model_path = os.path.join(demo, 'recipe_weights_seed1234.pkl')
    if not os.path.isfile(args.model_path):
        shapes = {k: v.shape for k, v in PWC_Recons().state_dict().items()}
        save_state_atomic(recipe_state(shapes, seed=1234), args.model_path)
    return ('demo: no checkpoint in pretrain_models/, using deterministic untrained recipe weights '
            '(put self_blind_vsr_realistic.pkl there for real results)')


def load_model(model_path, n_seq=5, scale=4):
    import jittor_sbvsr  # noqa: F401
    from .io.checkpoint import load_into_module, load_state
    from .models import PWC_Recons
    if not os.path.isfile(model_path):
        raise UserError(f'{model_path}: model file not found')
    net = PWC_Recons(n_sequence=n_seq, scale=scale)
    load_into_module(net, load_state(model_path), model_path)
    net.eval()
    return net


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


class VideoSR:
    """Runs the model window by window over one video, reusing work.

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

    With ``fused`` the ResBlock chains run as fused oneDNN convolutions on
    the CPU (ops/fused_conv.py); with ``compose`` the upsampling and output
    convolutions run as one LR convolution (models/composed_tail.py). Both
    give the same output to float rounding.
    """

    def __init__(self, net, n_seq=5, reuse=True, tile=0, overlap=16, fused=True, compose=True):
        self.net = net
        self.n_seq = n_seq
        self.reuse = reuse
        self.fused = fused
        self.compose = compose
        self._tail = (None, None)  # (net, its ComposedTail), made at the first window
        self.tile = int(tile or 0)
        self.overlap = int(overlap)
        if self.tile < 0 or self.overlap < 0:
            raise UserError('--tile and --tile_overlap must be >= 0')
        if self.tile and self.overlap >= self.tile:
            raise UserError(f'--tile_overlap ({self.overlap}) must be smaller than --tile ({self.tile})')

    def tiles(self, h, w):
        """[((y0, y1), (x0, x1)), ...] LR tiles of an h x w frame."""
        return [(ys, xs) for ys in tile_spans(h, self.tile, self.overlap)
                for xs in tile_spans(w, self.tile, self.overlap)]

    def windows(self, frames, windows):
        """Yield (window index, recons [1,3,H,W] float32, kernel [k,k], seconds)."""
        import jittor as jt
        feats, pyramids = {}, {}  # {(frame, tile): features}, {frame: PWC-Net pyramid}
        tiles = self.tiles(*frames[0].shape[:2])
        for k in range(len(windows)):
            jt.sync_all(True)
            t0 = time.perf_counter()
            self.net.fused_cpu = self.fused
            self.net.composed_tail = self._composed_tail()
            try:
                recons_np, kernel_np = self._window(frames, windows, k, feats, pyramids, tiles)
            finally:
                self.net.composed_tail = None  # its weights are this engine's snapshot
            jt.sync_all(True)
            yield k, recons_np, kernel_np, time.perf_counter() - t0

    def _window(self, frames, windows, k, feats, pyramids, tiles):
        """Window k's (recons, kernel) as numpy; drops the cached frames no later window needs."""
        import jittor as jt
        idx = windows[k]
        with jt.no_grad():
            x = jt.array(frames_to_input([frames[i] for i in idx]))
            xs = [x[:, j] for j in range(self.n_seq)]
            kernel = self.net.kernel_net(jt.concat(xs, 1))
            if self.reuse:
                flows = self.net.neighbour_flows(xs, keys=idx, pyramids=pyramids)
            else:
                flows = self.net.neighbour_flows(xs)
            if len(tiles) == 1:
                recons_np = self._recons(xs, idx, feats, 0, flows).numpy()
            else:
                recons_np = self._recons_tiled(xs, idx, feats, tiles, flows, *frames[0].shape[:2])
            if self.reuse:
                later = set(i for wi in windows[k + 1:k + self.n_seq] for i in wi)
                for key in [key for key in feats if key[0] not in later]:
                    del feats[key]
                for key in [key for key in pyramids if key not in later]:
                    del pyramids[key]
            return recons_np, kernel.numpy()[0, 0]

    def _composed_tail(self):
        if not self.compose:
            return None
        if self._tail[0] is not self.net:
            from .models.composed_tail import ComposedTail
            self._tail = (self.net, ComposedTail.of(self.net))
        return self._tail[1]

    def _recons(self, xs, idx, cache, t, flows):
        """The reconstruction of one window (or of tile ``t`` of it)."""
        if not self.reuse:
            return self.net.recons_forward(xs, flows=flows)
        feats = []
        for j, i in enumerate(idx):
            if (i, t) not in cache:
                cache[(i, t)] = self.net.frame_features(xs[j])
            feats.append(cache[(i, t)])
        return self.net.recons_forward(xs, feats, keys=idx, flows=flows)

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


def kernel_image(kernel, zoom=16):
    """An estimated kernel as an enlarged grey PNG, normalised to its peak."""
    k = np.nan_to_num(np.asarray(kernel, np.float64))
    k = k / k.max() if k.max() > 0 else np.zeros_like(k)
    return np.kron(np.rint(k * 255).astype(np.uint8), np.ones((zoom, zoom), np.uint8))


def _read_video(paths, size_must_mode, what):
    frames = [crop_to_multiple(read_frame(p), size_must_mode) for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UserError(f'{what}: frames differ in size ({sorted(shapes)})')
    return frames


def _pair_videos(inputs, gt_root):
    if gt_root is None:
        return [(name, paths, None) for name, paths in inputs]
    gts = dict(list_videos(gt_root))
    single = len(inputs) == 1 and len(gts) == 1
    pairs = []
    for name, paths in inputs:
        gt_paths = next(iter(gts.values())) if single else gts.get(name)
        if gt_paths is None:
            raise UserError(f'{os.path.join(gt_root, name)}: no ground-truth folder for video {name}')
        if len(gt_paths) != len(paths):
            raise UserError(f'video {name}: {len(paths)} LR frames but {len(gt_paths)} ground-truth frames '
                            f'in {os.path.join(gt_root, name)}')
        pairs.append((name, paths, gt_paths))
    return pairs


def run(args, root):
    """The inference CLI's work; ``args`` as parsed by cli.infer."""
    note = None
    if args.demo:
        note = prepare_demo(args, root)
    elif args.quick_test != '.':
        apply_preset(args, root)
    inputs = list_videos(args.input_path)
    pairs = _pair_videos(inputs, args.gt_path)
    for name, paths, _ in pairs:  # fail before any work on too-short videos
        window_indices(len(paths), args.n_seq, border=args.border, name=name)
    engine = VideoSR(None, args.n_seq, reuse=not args.no_reuse, tile=getattr(args, 'tile', 0),
                     overlap=getattr(args, 'tile_overlap', 16),
                     fused=not getattr(args, 'no_fused', False),
                     compose=not getattr(args, 'no_compose', False))  # checks the tile flags
    device = runtime.select_device(args.device)
    net = load_model(args.model_path, args.n_seq, args.scale)  # before anything is written
    engine.net = net
    flag = args.infer_flag if args.infer_flag != '.' else time.strftime('%Y%m%d-%H%M%S')
    out_dir = os.path.join(args.result_path, f'infer_{flag}')
    ensure_dir(out_dir)
    log = Logger(os.path.join(out_dir, f"inference_log_{time.strftime('%Y%m%d-%H%M%S')}.txt"))
    for key in ('input_path', 'gt_path', 'model_path', 'border', 'save_image', 'n_seq', 'scale',
                'size_must_mode', 'no_reuse', 'no_fused', 'no_compose', 'tile', 'tile_overlap'):
        log(f'{key}: {getattr(args, key, None)}')
    log(f'result_path: {out_dir}')
    log(f'runtime: {runtime.describe()}')
    log(f'Loaded model from {args.model_path} ({device})')
    if note:
        log(note)
    scores = {}
    for name, paths, gt_paths in pairs:
        frames = _read_video(paths, args.size_must_mode, f'video {name}')
        windows = window_indices(len(frames), args.n_seq, border=args.border, name=name)
        h, w = frames[0].shape[:2]
        bar = Progress(len(windows), desc=name)
        vid_scores = []
        for k, recons, kernel, secs in engine.windows(frames, windows):
            t = windows[k][args.n_seq // 2]
            stem = os.path.splitext(os.path.basename(paths[t]))[0]
            sr = to_uint8(recons)
            line = f'> {name}-{stem}'
            if gt_paths is not None:
                gt = read_frame(gt_paths[t])[:h * args.scale, :w * args.scale]
                if gt.shape != sr.shape:
                    raise UserError(f'{gt_paths[t]}: ground truth is {gt.shape[1]}x{gt.shape[0]}, '
                                    f'expected {sr.shape[1]}x{sr.shape[0]} (LR size x{args.scale})')
                p, s = psnr_ssim(sr, gt)
                vid_scores.append((p, s))
                line += f' PSNR={p:.5f}, SSIM={s:.4f}'
                bar.set_postfix(psnr=f'{p:.3f}')
            if args.save_image:
                save_png_atomic(os.path.join(out_dir, name, f'{stem}.png'), sr)
            if args.save_kernel:
                save_npy_atomic(os.path.join(out_dir, name, 'kernel', f'{stem}.npy'), kernel)
                save_png_atomic(os.path.join(out_dir, name, 'kernel', f'{stem}.png'), kernel_image(kernel))
            log(f'{line} forward_time={secs:.3f}s')
            bar.update()
        bar.close()
        if vid_scores:
            scores[name] = vid_scores
            p, s = np.mean(vid_scores, axis=0)
            log(f'# Video:{name} AVG-PSNR={p:.5f}, AVG-SSIM={s:.4f}')
    if scores:
        allv = [v for vs in scores.values() for v in vs]
        p, s = np.mean(allv, axis=0)
        log(f'# Total AVG-PSNR={p:.5f}, AVG-SSIM={s:.4f} ({len(allv)} frames)')
    log(f'Results in {out_dir}')
    log.close()
    return scores
