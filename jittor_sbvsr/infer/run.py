"""Super-resolve LR video folders with the reference's inference protocol.

One output per window of ``n_seq`` frames (border windows repeat the first
and last frames, see ``window_indices``); PSNR/SSIM on uint8 with a 4-pixel
crop when ground truth is given. Each frame's features are computed once per
video, not once per window: the output is the same, the work a fifth.

``run`` checks everything it can before it writes anything: the flags, the
checkpoint (whose architecture it reads from the weights, weights/arch.py), and
every frame of every video (readable, one size per video, ground truth
paired by name and exactly scale x LR). A number it logs is therefore never
computed on mismatched frames; what it cannot score it says so.

Here: the run and its log. The inputs are listed and checked in
inputs.py, the model and output folder in setup.py; under
``mpirun`` the windows are shared out as split.py explains.
"""
import os
import time

import numpy as np

from .. import dist, runtime
from ..data.folders import check_gt_size
from ..data.windows import to_uint8, window_indices
from ..data.kernels import kernel_image
from ..data.video import DEFAULT_CRF, VideoWriter
from .engine import FrameSource, VideoSR
from ..errors import UserError
from .inputs import GroundTruth, Video, check_flags, check_videos, frames, is_video, list_inputs  # noqa: F401
from .setup import (PRESETS, apply_preset, build_model, choose_output_dir, load_model,  # noqa: F401
                          prepare_demo, read_checkpoint)
from .split import encode_parts, part_path, remove_parts, window_spans, write_part
from ..metrics.psnr_ssim import psnr_ssim
from ..utils import Logger, VideoProgress, ensure_dir, save_npy_atomic, save_png_atomic
from ..utils.files import remove_stale_temps, stale_note


def run(args, root):
    """The inference CLI's work; ``args`` as parsed by cli.infer."""
    named = args.infer_flag not in ('.', '', None)
    notes = []
    # 1. everything that can be wrong, before anything is written (on every rank: same errors)
    check_flags(args)
    if args.demo:
        notes.extend(_demo(args, root))
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
    out_dir = dist.broadcast_text(out_dir)  # rank 0's: a time stamp may differ by a second
    lead, world = dist.rank() == 0, dist.world_size()
    net = build_model(state, arch, args.model_path)
    del state
    engine = VideoSR(net, args.n_seq, reuse=not args.no_reuse, tile=args.tile, overlap=args.tile_overlap,
                     fused=not args.no_fused, compose=not args.no_compose, winograd=not args.no_winograd,
                     max_memory=getattr(args, 'max_memory', None))
    # 2. the run
    stale = None
    if lead:
        ensure_dir(out_dir)
        stale = stale_note(remove_stale_temps(out_dir, recursive=True))
    dist.barrier()  # no rank writes before rank 0 removed the stale temporary files
    log = Logger(os.path.join(out_dir, f"inference_log_{time.strftime('%Y%m%d-%H%M%S')}.txt")) if lead else _Quiet()
    from ..weights.arch import describe
    for key in ('input_path', 'gt_path', 'model_path', 'border', 'save_image', 'crf', 'n_seq', 'scale',
                'size_must_mode', 'no_reuse', 'no_fused', 'no_winograd', 'no_compose',
                'tile', 'tile_overlap'):
        log(f'{key}: {getattr(args, key, None)}')
    log(f'result_path: {out_dir}')
    log(f'runtime: {runtime.describe()}')
    log(f'Loaded model from {args.model_path} ({device}): {describe(arch)}')
    log(f'engine: {engine.model.describe()}')
    if world > 1:
        log(f'MPI: {world} ranks, each runs a share of the windows; this log has them all, in order')
    for line in notes + ([stale] if stale else []):
        log(line)
    wins = [window_indices(v.n, args.n_seq, border=args.border) for v in videos]
    share = window_spans([len(w) for w in wins], dist.rank(), world)
    total = sum(stop - start for start, stop in share.values())
    done = [0]
    t_run = time.perf_counter()
    try:
        with VideoProgress(total, enabled=lead) as bar:
            rows = _process(args, engine, videos, wins, share, out_dir, log if world == 1 else None, done, bar)
        if world > 1:
            rows = dist.merge_owned(rows)
            if lead:
                _encode_split_videos(args, videos, wins, out_dir, world)
                for v, w, r in zip(videos, wins, _per_video(rows, wins)):
                    for k, row in enumerate(r):
                        log(_frame_line(v, _stem(v, w[k][args.n_seq // 2]), row))
                    _log_video(log, v, r)
                _log_total(log, videos, rows, wins)
            done[0] = int(dist.all_sum([done[0]])[0])
    except BaseException as e:
        log.close()
        _append_line(log.path, _ending(e, done[0], total))
        raise
    log(f'Results in {out_dir}')
    log(f'completed: {done[0]} frames of {len(videos)} video(s) in {time.perf_counter() - t_run:.1f} s')
    log.close()
    return {v.name: [(float(p), float(q)) for p, q, _ in r] for v, r in zip(videos, _per_video(rows, wins))
            if v.gt is not None and v.no_metric is None}


class _Quiet:
    """The log of the ranks other than 0: they say nothing."""
    path = None

    def __call__(self, line):
        pass

    def close(self):
        pass


def _demo(args, root):
    """prepare_demo; under mpirun rank 0 makes the demo's files first, then the others find them."""
    if runtime.mpi_env() is None:
        return prepare_demo(args, root)
    runtime.select_device(args.device)  # Jittor, and with it MPI
    if dist.rank() == 0:
        notes = prepare_demo(args, root)
        dist.barrier()
        return notes
    dist.barrier()
    return prepare_demo(args, root)


def _ending(err, done, total):
    """The log's last line for a run that stopped on ``err``."""
    if isinstance(err, KeyboardInterrupt) or runtime.interrupted():
        return f'interrupted (Ctrl-C) after {done} of {total} frames'
    if isinstance(err, (UserError, runtime.RuntimeSetupError)):
        return runtime.error_line(err)
    return f'failed after {done} of {total} frames: {type(err).__name__}: {" ".join(str(err).split())[:300]}'


def _append_line(path, line):
    """One more line at the end of the (closed) log file, not on the screen: guarded prints it there."""
    if path is None:
        return
    try:
        with open(path, 'a', encoding='utf-8') as f:
            f.write(line + '\n')
    except OSError:
        pass


def _per_video(rows, wins):
    """``rows`` (one per window of the run) cut into each video's."""
    ends = np.cumsum([len(w) for w in wins])
    return [rows[e - len(w):e] for w, e in zip(wins, ends)]


def _stem(v, t):
    """The output name of frame t of video ``v``: its LR file's, or the index for a video file."""
    return f'{t:08d}' if is_video(v.lr) else os.path.splitext(os.path.basename(v.lr[t]))[0]


def _frame_line(v, stem, row):
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


def _log_video(log, v, rows):
    """The average line of a video with ground truth."""
    if v.gt is None:
        return
    if v.no_metric is None:
        p, q = np.mean(_scores(rows), axis=0)
        log(f'# Video:{v.name} AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f}')
    else:
        log(f'# Video:{v.name} no PSNR/SSIM: {v.no_metric}')


def _log_total(log, videos, rows, wins):
    """The average over every scored frame of the run."""
    scored = [_scores(r) for v, r in zip(videos, _per_video(rows, wins)) if v.gt is not None and v.no_metric is None]
    unscored = [v.name for v in videos if v.gt is not None and v.no_metric is not None]
    if scored:
        allv = np.concatenate(scored)
        p, q = np.mean(allv, axis=0)
        log(f'# Total AVG-PSNR={p:.5f}, AVG-SSIM={q:.4f} ({len(allv)} frames'
            + (f'; not scored: {", ".join(unscored)}' if unscored else '') + ')')


def _process(args, engine, videos, wins, share, out_dir, log, done, bar):
    """Super-resolve (and score) this rank's ``share`` of the windows (all of them in one process).

    Returns [PSNR, SSIM, seconds] per window of the run, 0.0 for other ranks'
    windows; ``log`` given (one process), logs the lines as they come.
    """
    rows = np.zeros((sum(len(w) for w in wins), 3))
    for i, (v, vid_rows) in enumerate(zip(videos, _per_video(rows, wins))):
        if i not in share:
            continue
        start, stop = share[i]
        windows = wins[i]
        first = min(windows[start])
        source = FrameSource(frames(v, args.size_must_mode, first), windows, first=first)
        gt_of = GroundTruth(v.gt) if v.gt is not None else None
        writer = None
        if is_video(v.lr) and (start, stop) == (0, len(windows)):
            writer = VideoWriter(os.path.join(out_dir, v.name + '.mp4'), v.fps,
                                 crf=getattr(args, 'crf', DEFAULT_CRF), audio_from=v.lr)
        try:
            bar.video(v.name, stop - start)
            _video(args, engine, v, windows, (start, stop), source, gt_of, writer, out_dir, vid_rows, log, done, bar)
            if writer is not None:
                writer.close()
        finally:
            if writer is not None:
                writer.abort()
            if gt_of is not None:
                gt_of.close()
        if log is not None:
            _log_video(log, v, vid_rows)
    if log is not None:
        _log_total(log, videos, rows, wins)
    return rows


def _video(args, engine, v, windows, span, source, gt_of, writer, out_dir, rows, log, done, bar):
    """Windows ``span`` of one video: frames scored (into ``rows``), written (PNG, video) and logged."""
    split = writer is None and is_video(v.lr)  # a video file shared with other ranks: rank 0 encodes it
    for k, recons, kernel, secs in engine.windows(source, windows, *span):
        t = windows[k][args.n_seq // 2]
        stem = _stem(v, t)
        sr = to_uint8(recons)
        if gt_of is not None:
            gt, gt_path = gt_of(t)
            check_gt_size(v.shape, gt.shape, args.scale, v.lr if is_video(v.lr) else v.lr[t], gt_path)
            if v.no_metric is None:
                rows[k, :2] = psnr_ssim(sr, gt[:sr.shape[0], :sr.shape[1]])  # the size-multiple crop
        rows[k, 2] = secs
        if writer is not None:
            writer.write(sr)
        if args.save_image:
            save_png_atomic(os.path.join(out_dir, v.name, f'{stem}.png'), sr)
        if split:
            write_part(part_path(out_dir, v.name, stem, args.save_image), sr, args.save_image)
        if args.save_kernel:
            save_npy_atomic(os.path.join(out_dir, v.name, 'kernel', f'{stem}.npy'), kernel)
            save_png_atomic(os.path.join(out_dir, v.name, 'kernel', f'{stem}.png'), kernel_image(kernel))
        if log is not None:
            log(_frame_line(v, stem, rows[k]))
        done[0] += 1
        bar.update(**({'psnr': f'{rows[k, 0]:.3f}'} if gt_of is not None and v.no_metric is None else {}))


def _encode_split_videos(args, videos, wins, out_dir, world):
    """Rank 0, once every rank is done: the video files no one rank ran whole, from their frames."""
    counts = [len(w) for w in wins]
    whole = {i for r in range(world) for i, span in window_spans(counts, r, world).items() if span == (0, counts[i])}
    for i, v in enumerate(videos):
        if not is_video(v.lr) or i in whole:
            continue
        paths = [part_path(out_dir, v.name, _stem(v, w[args.n_seq // 2]), args.save_image) for w in wins[i]]
        writer = VideoWriter(os.path.join(out_dir, v.name + '.mp4'), v.fps,
                             crf=getattr(args, 'crf', DEFAULT_CRF), audio_from=v.lr)
        try:
            encode_parts(writer, paths, args.save_image)
        finally:
            writer.abort()
    remove_parts(out_dir)
