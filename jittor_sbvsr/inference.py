"""Super-resolve LR video folders with the reference's inference protocol.

One output per window of ``n_seq`` frames (border windows repeat the first
and last frames, see ``window_indices``); PSNR/SSIM on uint8 with a 4-pixel
crop when ground truth is given. Each frame's features are computed once per
video, not once per window: the output is the same, the work a fifth.

``run`` checks everything it can before it writes anything: the flags, the
checkpoint (whose architecture it reads from the weights, io/arch.py), and
every frame of every video (readable, one size per video, ground truth
paired by name and exactly scale x LR). A number it logs is therefore never
computed on mismatched frames; what it cannot score it says so.
"""
import os
import time
from collections import namedtuple

import numpy as np

from . import runtime
from .data.video import DEFAULT_CRF, VideoReader, VideoWriter, is_video_file, probe
from .data.frames import (check_gt_size, crop_to_multiple, frames_by_name, list_videos, pair_frames, read_frame,
                          to_uint8, window_indices)
from .data.kernels import kernel_image
from .engine import FrameSource, VideoSR, check_tiles
from .errors import UserError
from .metrics.psnr_ssim import metric_problem, psnr_ssim
from .utils import Logger, VideoProgress, ensure_dir, save_npy_atomic, save_png_atomic
from .utils.files import is_temp_name, remove_stale_temps, stale_note

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
    if args.infer_flag in ('.', '', None):
        args.infer_flag = args.quick_test
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
    the pipeline runs, the pictures are not better than bilinear). Returns
    the lines to log.
    """
    from .data.synthetic import make_demo_videos
    demo = os.path.join(root, 'demo_results')
    data = os.path.join(demo, 'input')
    if not os.path.isdir(os.path.join(data, 'LR_blurdown_x4')):
        make_demo_videos(data, n_videos=2, n_frames=7, hr_size=(128, 192), seed=0)
    args.input_path = os.path.join(data, 'LR_blurdown_x4')
    args.gt_path = os.path.join(data, 'HR')
    args.result_path = demo
    if args.infer_flag in ('.', '', None):
        args.infer_flag = 'demo'
    args.border = args.save_kernel = True
    stem = os.path.join(root, 'pretrain_models', 'self_blind_vsr_realistic')
    found = [p for p in (stem + '.pkl', stem + '.pt') if os.path.isfile(p)]
    if found:
        args.model_path = found[0]
        return []
    from .io.checkpoint import save_state_atomic
    from .io.recipe import recipe_state
    from .models import PWC_Recons
    args.model_path = os.path.join(demo, 'recipe_weights_seed1234.pkl')
    stale = stale_note(remove_stale_temps(demo, of=os.path.basename(args.model_path)))  # a killed first demo's
    if not os.path.isfile(args.model_path):
        shapes = {k: v.shape for k, v in PWC_Recons().state_dict().items()}
        save_state_atomic(recipe_state(shapes, seed=1234), args.model_path)
    return [line for line in (stale, 'demo: no checkpoint in pretrain_models/, using deterministic untrained '
                              'recipe weights (put self_blind_vsr_realistic.pkl there for real results)') if line]


def read_checkpoint(model_path, n_seq=None, scale=None):
    """(state, architecture) of a checkpoint, with the flags given checked against it.

    numpy only: a wrong file or flag is reported before Jittor starts.
    ``n_seq`` / ``scale`` None take the checkpoint's values.
    """
    from .io.arch import conflict_error, conflicts, derive_arch
    from .io.checkpoint import check_finite, load_state
    model_path = os.fspath(model_path)
    if os.path.isdir(model_path):
        raise UserError(f'{model_path}: is a folder; --model_path takes a weights file (.pkl or .pt)')
    if not os.path.isfile(model_path):
        raise UserError(f'{model_path}: model file not found (--model_path)')
    if _is_training_state(model_path):
        raise UserError(f"{model_path}: is the trainer's state for --resume, not a model; give the "
                        'model/model_latest.pkl or model/model_best.pkl beside it')
    state = load_state(model_path)
    arch = derive_arch(state, model_path)
    check_finite(state, model_path)
    if scale is not None and (scale < 1 or scale & (scale - 1)):
        raise UserError(f"--scale {scale}: must be a power of two (the model upsamples in x2 steps), and "
                        f"the checkpoint {model_path} is x{arch['scale']}; leave --scale out to use that")
    if n_seq is not None and (n_seq < 1 or n_seq % 2 == 0):
        raise UserError(f'--n_seq {n_seq}: must be a positive odd number (the centre frame and as many '
                        f"neighbours on each side), and the checkpoint {model_path} takes "
                        f"{arch['n_sequence']}-frame windows; leave --n_seq out to use that")
    found = conflicts(arch, {'scale': ('--scale', scale), 'n_sequence': ('--n_seq', n_seq)})
    if found:
        raise conflict_error(model_path, found, "leave the flag out to use the checkpoint's value, or give a "
                             'checkpoint made for it')
    return state, arch


def _is_training_state(path):
    """True for the trainer's training_state.npz (trainer/state.py): a zip with a meta entry."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return 'meta.npy' in z.namelist() and any(n.startswith('model/') for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def build_model(state, arch, model_path):
    """The PWC_Recons ``arch`` describes, with ``state`` loaded strictly (finite values only)."""
    import jittor_sbvsr  # noqa: F401
    from .io.arch import describe
    from .io.checkpoint import expected_shapes, load_into_module, validate_state
    from .models import PWC_Recons
    net = PWC_Recons(**arch)
    validate_state(state, expected_shapes(net), model_path,
                   what=f'the model its own tensors describe ({describe(arch)})')
    load_into_module(net, state, model_path)
    net.eval()
    return net


def load_model(model_path, n_seq=None, scale=None):
    """A checkpoint as the model it describes; ``n_seq`` / ``scale``, given, must match it."""
    state, arch = read_checkpoint(model_path, n_seq, scale)
    return build_model(state, arch, model_path)


# one video of a run: its frames (a list of frame files, or a video file's path) and ground truth
# (the same kinds, or None), the LR size, that size after the size-multiple crop, why it gets no
# metrics (None: it does), its frame count and frame rate (video files; None for frame folders)
Video = namedtuple('Video', 'name lr gt shape size no_metric n fps')


def check_flags(args):
    """The flags that are wrong whatever the data and checkpoint (--scale and --n_seq are checked
    with the checkpoint, read_checkpoint); before anything is read."""
    if args.size_must_mode < 1:
        raise UserError(f'--size_must_mode {args.size_must_mode}: must be >= 1 (1: no crop)')
    check_tiles(args.tile, args.tile_overlap)
    crf = getattr(args, 'crf', DEFAULT_CRF)
    if not 0 <= crf <= 51:
        raise UserError(f'--crf {crf}: must be 0..51 (x264; lower is better)')
    flag = args.infer_flag
    if flag in ('', '..') or os.sep in flag or (os.altsep and os.altsep in flag):
        raise UserError(f"--infer_flag '{flag}': must be a plain name (it becomes the folder infer_<flag>)")


def is_video(src):
    """True for a video file's path, False for a list of frame files."""
    return isinstance(src, str)


def list_inputs(path, what):
    """``[(name, source)]``: a video file, a folder of video files (name: file stem; source:
    its path), or frame folders (list_videos; source: the frame paths)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [(os.path.splitext(os.path.basename(path))[0], path)]
    if os.path.isdir(path):
        try:
            entries = sorted(e.name for e in os.scandir(path) if not e.name.startswith('.'))
        except OSError as e:
            raise UserError(f'{path}: cannot list folder ({e.strerror or e})') from None
        files = [n for n in entries if is_video_file(n) and os.path.isfile(os.path.join(path, n))]
        if files:
            others = [n for n in entries if n not in files and not is_temp_name(n)]
            if others:
                raise UserError(f'{path}: holds video files and other things ({", ".join(others[:3])}); '
                                'give a folder of video files or a folder of frame folders')
            names = {}
            for n in files:
                stem = os.path.splitext(n)[0]
                if stem in names:
                    raise UserError(f'{os.path.join(path, n)}: two videos named {stem} ({names[stem]} too); '
                                    'their outputs would be the same file')
                names[stem] = n
            return [(stem, os.path.join(path, n)) for stem, n in names.items()]
    return list_videos(path, what)


def _pair_videos(inputs, gt_root, notes):
    """[(name, LR source, GT source or None)]: videos pair by name; frames by file name when both
    are frame folders, by index when either is a video file."""
    if gt_root is None:
        return [(name, src, None) for name, src in inputs]
    gts = dict(list_inputs(gt_root, 'ground-truth folder (--gt_path)'))
    single = len(inputs) == 1 and len(gts) == 1
    pairs = []
    for name, src in inputs:
        gt_name = name if name in gts else (next(iter(gts)) if single else None)
        if gt_name is None:
            raise UserError(f'{os.path.join(gt_root, name)}: no ground truth for video {name} in '
                            f'--gt_path (it has {", ".join(list(gts)[:5])}{", ..." * (len(gts) > 5)})')
        if gt_name != name:
            notes.append(f'note: the only LR video {name} is paired with the only ground-truth video {gt_name}')
        gt = gts[gt_name]
        if not is_video(src) and not is_video(gt):
            matched, warning = pair_frames(src, gt, os.path.dirname(src[0]), os.path.dirname(gt[0]))
            if warning:
                notes.append(warning)
            gt = [g for _, g in matched]
        pairs.append((name, src, gt))
    return pairs


def _check_shape(path, shape, first, m):
    """(h, w) of a frame, which must equal ``first`` ((h, w, path) of its video's first frame)."""
    h, w = shape[:2]
    if first is not None and (h, w) != first[:2]:
        raise UserError(f'{path}: frame is {h}x{w}, but {os.path.basename(first[2])} of the same video is '
                        f'{first[0]}x{first[1]}; the frames of a video must have one size')
    if h < m or w < m:
        raise UserError(f'{path}: frame is {h}x{w}, smaller than --size_must_mode {m}')
    return h, w


def _check_gt(name, lr, gt, n, hw, scale):
    """A ground truth paired by index (either side a video file): same frame count, scale x size."""
    where = gt if is_video(gt) else os.path.dirname(gt[0])
    shapes = [probe(gt).size] if is_video(gt) else None
    n_gt = probe(gt).n_frames if is_video(gt) else len(gt)
    if n_gt != n:
        raise UserError(f'{where}: ground truth of video {name} has {n_gt} frames, the input {n}; '
                        'frames of a video file pair by index, so the counts must match')
    for g in ([gt] if is_video(gt) else gt):
        check_gt_size(hw, shapes[0] if shapes else read_frame(g).shape, scale,
                      lr if is_video(lr) else lr[0], g)
    return 1 if is_video(gt) else n_gt


def _video_defaults(args, videos, notes):
    """Video files keep every frame (border windows: the output keeps its length and audio sync)
    and write PNG frames only when --save_image is given; frame folders write PNGs by default."""
    if args.save_image is None:
        args.save_image = not videos
    if videos and not args.border:
        args.border = True
        notes.append('note: video files are restored with --border (every frame gets an output)')


def check_videos(args, n_seq, scale, notes):
    """Every video checked before anything is written: [Video].

    Frame folders: each frame must decode, the frames of a video must have
    one size, and each ground-truth frame must pair with its LR frame (by
    name) and be exactly ``scale`` x its size. Video files: ffmpeg must
    decode them (probe), with at least a window's frames; a ground truth
    beside a video file pairs by index and must have as many frames. The
    size-multiple crop then cuts LR and GT the same way. A video whose frames
    are too small for PSNR/SSIM still runs; its ``no_metric`` says why.
    """
    inputs = list_inputs(args.input_path, 'input folder (--input_path)')
    _video_defaults(args, any(is_video(src) for _, src in inputs), notes)
    m = args.size_must_mode
    videos = []
    t0, n = time.perf_counter(), 0
    for name, lr, gt in _pair_videos(inputs, args.gt_path, notes):
        fps = None
        if is_video(lr):
            info = probe(lr)
            count, first = info.n_frames, (*_check_shape(lr, info.size, None, m), lr)
            fps = info.fps
            if fps is None:
                fps = 25
                notes.append(f'note: {lr} states no frame rate; its output is written at 25 fps')
            n += 1
        else:
            count = len(lr)
            frames_by_name(lr, os.path.dirname(lr[0]))  # one output file per frame
            first = None
            for i, p in enumerate(lr):
                h, w = _check_shape(p, read_frame(p).shape, first, m)
                first = first or (h, w, p)
                if gt is not None and not is_video(gt):
                    check_gt_size((h, w), read_frame(gt[i]).shape, scale, p, gt[i])
                n += 1 + (gt is not None and not is_video(gt))
        window_indices(count, n_seq, border=args.border, name=name)  # enough frames
        if gt is not None and (is_video(lr) or is_video(gt)):
            n += _check_gt(name, lr, gt, count, first[:2], scale)
        size = (first[0] - first[0] % m, first[1] - first[1] % m)
        why = None if gt is None else metric_problem(size[0] * scale, size[1] * scale)
        if why:
            notes.append(f'note: video {name}: no PSNR/SSIM, {why}; its SR frames are still written')
        videos.append(Video(name, lr, gt, first[:2], size, why, count, fps))
    notes.append(f'checked {n} frames and video files of {len(videos)} video(s) in '
                 f'{time.perf_counter() - t0:.1f} s')
    return videos


def _holds_results(folder):
    """True when ``folder`` has any file but the leftovers of interrupted writes."""
    if not os.path.isdir(folder):
        return False
    return any(not is_temp_name(f) for _, _, files in os.walk(folder) for f in files)


def choose_output_dir(result_path, flag, named):
    """(folder, note) of this run's results: never a folder with an earlier run's results.

    A flag the user ``named`` that is taken is an error (they may mean to
    replace it: that is theirs to do); the automatic names (time stamp,
    --demo, --quick_test) move on to ``infer_<flag>_2``, ``_3``, ... Writes nothing.
    """
    if os.path.exists(result_path) and not os.path.isdir(result_path):
        raise UserError(f'{result_path}: --result_path exists and is not a folder')
    base = os.path.join(result_path, f'infer_{flag}')
    if os.path.exists(base) and not os.path.isdir(base):
        raise UserError(f'{base}: exists and is not a folder; choose another --infer_flag')
    if not _holds_results(base):
        return base, None
    if named:
        raise UserError(f"{base}: already holds the results of an earlier run; runs are never mixed: choose "
                        'another --infer_flag, or move that folder away')
    k = 2
    while _holds_results(f'{base}_{k}'):
        k += 1
    return f'{base}_{k}', f'note: {base} holds an earlier run; this run writes to {base}_{k}'


def _frames(video, m):
    """A video's LR frames, one at a time, cropped to the size multiple (frame files re-checked:
    they may change during a run)."""
    if is_video(video.lr):
        with VideoReader(video.lr) as reader:
            for f in reader:
                yield crop_to_multiple(f, m)
        return
    first = None
    for p in video.lr:
        f = read_frame(p)
        h, w = _check_shape(p, f.shape, first, m)
        first = first or (h, w, p)
        yield crop_to_multiple(f, m)


class _GroundTruth:
    """Ground-truth frame t of a video, asked for in increasing t (a video file is decoded once)."""

    def __init__(self, gt):
        self.gt, self._it, self._next = gt, None, 0

    def __call__(self, t):
        if not is_video(self.gt):
            return read_frame(self.gt[t]), self.gt[t]
        if self._it is None:
            self._reader = VideoReader(self.gt)
            self._it = iter(self._reader)
        while True:
            f, self._next = next(self._it), self._next + 1
            if self._next == t + 1:
                return f, self.gt

    def close(self):
        if self._it is not None:
            self._it.close()
            self._reader.close()


def _ending(err, done, total):
    """The log's last line for a run that stopped on ``err``."""
    if isinstance(err, KeyboardInterrupt) or runtime.interrupted():
        return f'interrupted (Ctrl-C) after {done} of {total} frames'
    if isinstance(err, (UserError, runtime.RuntimeSetupError)):
        return runtime.error_line(err)
    return f'failed after {done} of {total} frames: {type(err).__name__}: {" ".join(str(err).split())[:300]}'


def run(args, root):
    """The inference CLI's work; ``args`` as parsed by cli.infer."""
    named = args.infer_flag not in ('.', '', None)
    notes = []
    # 1. everything that can be wrong, before anything is written
    check_flags(args)
    if args.demo:
        notes.extend(prepare_demo(args, root))
    elif args.quick_test != '.':
        apply_preset(args, root)
    flag = args.infer_flag if args.infer_flag not in ('.', '', None) else time.strftime('%Y%m%d-%H%M%S')
    out_dir, note = choose_output_dir(args.result_path, flag, named)
    if note:
        notes.append(note)
    state, arch = read_checkpoint(args.model_path, args.n_seq, args.scale)
    args.n_seq, args.scale = arch['n_sequence'], arch['scale']
    videos = check_videos(args, args.n_seq, args.scale, notes)
    device = runtime.select_device(args.device)
    net = build_model(state, arch, args.model_path)
    del state
    engine = VideoSR(net, args.n_seq, reuse=not args.no_reuse, tile=args.tile, overlap=args.tile_overlap,
                     fused=not args.no_fused, compose=not args.no_compose, winograd=not args.no_winograd)
    # 2. the run
    ensure_dir(out_dir)
    stale = stale_note(remove_stale_temps(out_dir, recursive=True))
    log = Logger(os.path.join(out_dir, f"inference_log_{time.strftime('%Y%m%d-%H%M%S')}.txt"))
    from .io.arch import describe
    for key in ('input_path', 'gt_path', 'model_path', 'border', 'save_image', 'crf', 'n_seq', 'scale',
                'size_must_mode', 'no_reuse', 'no_fused', 'no_winograd', 'no_compose', 'tile', 'tile_overlap'):
        log(f'{key}: {getattr(args, key, None)}')
    log(f'result_path: {out_dir}')
    log(f'runtime: {runtime.describe()}')
    log(f'Loaded model from {args.model_path} ({device}): {describe(arch)}')
    log(f'engine: {engine.model.describe()}')
    for line in notes + ([stale] if stale else []):
        log(line)
    total = sum(len(window_indices(v.n, args.n_seq, border=args.border)) for v in videos)
    done = [0]
    t_run = time.perf_counter()
    try:
        with VideoProgress(total) as bar:
            scores = _process(args, engine, videos, out_dir, log, done, bar)
    except BaseException as e:
        log.close()
        _append_line(log.path, _ending(e, done[0], total))
        raise
    log(f'Results in {out_dir}')
    log(f'completed: {done[0]} frames of {len(videos)} video(s) in {time.perf_counter() - t_run:.1f} s')
    log.close()
    return scores


def _append_line(path, line):
    """One more line at the end of the (closed) log file, not on the screen: guarded prints it there."""
    try:
        with open(path, 'a', encoding='utf-8') as f:
            f.write(line + '\n')
    except OSError:
        pass


def _process(args, engine, videos, out_dir, log, done, bar):
    """Super-resolve (and score) every video; ``done[0]`` counts the frames written."""
    scores, unscored = {}, []
    for v in videos:
        windows = window_indices(v.n, args.n_seq, border=args.border, name=v.name)
        source = FrameSource(_frames(v, args.size_must_mode), windows)
        gt_of = _GroundTruth(v.gt) if v.gt is not None else None
        writer = None
        if is_video(v.lr):
            writer = VideoWriter(os.path.join(out_dir, v.name + '.mp4'), v.fps,
                                 crf=getattr(args, 'crf', DEFAULT_CRF), audio_from=v.lr)
        try:
            bar.video(v.name, len(windows))
            vid_scores = _video(args, engine, v, windows, source, gt_of, writer, out_dir, log, done, bar)
            if writer is not None:
                writer.close()
        finally:
            if writer is not None:
                writer.abort()
            if gt_of is not None:
                gt_of.close()
        if vid_scores:
            scores[v.name] = vid_scores
            p, q = np.mean(vid_scores, axis=0)
            log(f'# Video:{v.name} AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f}')
        elif v.gt is not None:
            unscored.append(v.name)
            log(f'# Video:{v.name} no PSNR/SSIM: {v.no_metric}')
    if scores:
        allv = [x for xs in scores.values() for x in xs]
        p, q = np.mean(allv, axis=0)
        log(f'# Total AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f} ({len(allv)} frames'
            + (f'; not scored: {", ".join(unscored)}' if unscored else '') + ')')
    return scores


def _video(args, engine, v, windows, source, gt_of, writer, out_dir, log, done, bar):
    """One video's windows: frames scored, written (PNG, video) and logged as they come."""
    vid_scores = []
    for k, recons, kernel, secs in engine.windows(source, windows):
        t = windows[k][args.n_seq // 2]
        stem = f'{t:08d}' if is_video(v.lr) else os.path.splitext(os.path.basename(v.lr[t]))[0]
        sr = to_uint8(recons)
        line = f'> {v.name}-{stem}'
        if gt_of is not None:
            gt, gt_path = gt_of(t)
            check_gt_size(v.shape, gt.shape, args.scale, v.lr if is_video(v.lr) else v.lr[t], gt_path)
            if v.no_metric is None:
                p, q = psnr_ssim(sr, gt[:sr.shape[0], :sr.shape[1]])  # the size-multiple crop
                vid_scores.append((p, q))
                line += f' PSNR={p:.5f}, SSIM={q:.4f}'
            else:
                line += ' PSNR/SSIM: none (frames too small)'
        if writer is not None:
            writer.write(sr)
        if args.save_image:
            save_png_atomic(os.path.join(out_dir, v.name, f'{stem}.png'), sr)
        if args.save_kernel:
            save_npy_atomic(os.path.join(out_dir, v.name, 'kernel', f'{stem}.npy'), kernel)
            save_png_atomic(os.path.join(out_dir, v.name, 'kernel', f'{stem}.png'), kernel_image(kernel))
        log(f'{line} forward_time={secs:.3f}s')
        done[0] += 1
        bar.update(**({'psnr': f'{vid_scores[-1][0]:.3f}'} if vid_scores else {}))
    return vid_scores
