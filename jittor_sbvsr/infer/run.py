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

The route of a frame, in one direction: read (inputs.py: ``frames``, from
the first frame a share needs) -> window (engine.py: ``FrameSource``) ->
network (``VideoSR.windows``, here, in the main process) -> score, write
and record (outputs.py and resume.py, in the host worker of host.py, beside
the next windows) -> the log line (report.py), here, in order. Under
``mpirun`` the windows are shared out as split.py explains.
"""
import os
import time

import numpy as np

from .. import dist, runtime
from ..data.windows import to_uint8, window_indices
from ..weights.arch import describe
from ..utils import Logger, VideoProgress, ensure_dir
from ..utils.files import remove_stale_temps, stale_note
from ..utils.memory import format_size
from .engine import FrameSource, VideoSR, run_budget
from .host import Host
from .inputs import check_flags, check_videos, frames, is_video, stem
from .outputs import OutputSpec, VideoFile, part_path, remove_parts
from .report import Quiet, append_line, ending, frame_line, log_total, log_video, per_video
from .resume import NoRecord, Progress, finished, signature
from .setup import apply_preset, build_model, choose_output_dir, prepare_demo, read_checkpoint
from .split import window_spans


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
    out_dir, note = choose_output_dir(args.result_path, flag, named, resume=args.resume)
    if note:
        notes.append(note)
    state, arch = read_checkpoint(args.model_path, args.n_seq, args.scale)
    args.n_seq, args.scale = arch['n_sequence'], arch['scale']
    videos = check_videos(args, args.n_seq, args.scale, notes)
    device = runtime.select_device(args.device)
    out_dir = dist.broadcast_text(out_dir)  # rank 0's: a time stamp may differ by a second
    lead, world = dist.rank() == 0, dist.world_size()
    sig = signature(args, videos, device) if world == 1 else None
    done, earlier = finished(out_dir, sig) if args.resume else ({}, None)
    budget = run_budget(args.max_memory, args.tile, earlier)
    if sig is not None:
        sig['budget'] = budget
    # 2. the run
    scored = any(v.gt is not None and v.no_metric is None for v in videos)
    with Host(score=scored) as host:  # started now: its start-up overlaps the model's
        net = build_model(state, arch, args.model_path)
        del state
        engine = VideoSR(net, args.n_seq, reuse=not args.no_reuse, tile=args.tile, overlap=args.tile_overlap,
                         fused=not args.no_fused, compose=not args.no_compose, winograd=not args.no_winograd,
                         max_memory=budget)
        stale = None
        if lead:
            ensure_dir(out_dir)
            stale = stale_note(remove_stale_temps(out_dir, recursive=True))
        dist.barrier()  # no rank writes before rank 0 removed the stale temporary files
        record = Progress(out_dir, sig, done) if world == 1 else NoRecord()
        log = Logger(os.path.join(out_dir, f"inference_log_{time.strftime('%Y%m%d-%H%M%S')}.txt")) if lead else Quiet()
        for key in ('input_path', 'gt_path', 'model_path', 'border', 'save_image', 'crf', 'n_seq', 'scale',
                    'size_must_mode', 'no_reuse', 'no_fused', 'no_winograd', 'no_compose', 'tile', 'tile_overlap',
                    'max_memory', 'resume'):
            log(f'{key}: {getattr(args, key)}')
        log(f'result_path: {out_dir}')
        log(f'runtime: {runtime.describe()}')
        log(f'Loaded model from {args.model_path} ({device}): {describe(arch)}')
        log(f'engine: {engine.model.describe()}')
        if world > 1:
            log(f'MPI: {world} ranks, each runs a share of the windows; this log has them all, in order')
        if args.resume:
            log(f'resume: {len(done)} frame(s) finished by the earlier run are kept; their lines below are '
                'from its record')
            if earlier is not None and budget == earlier and args.max_memory is None:
                log(f"memory budget: {format_size(budget)}, the earlier run's (it tiles as that run did)")
        for line in notes + ([stale] if stale else []):
            log(line)
        share = _Share(args, engine, host, out_dir, log if world == 1 else None, record, done)
        return share.run(videos, log, lead, world)


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


class _Share:
    """This process's windows of the run, video after video: the network here, the outputs in the
    host worker, which records them; the results come back in order and are logged (``log``: one
    process)."""

    def __init__(self, args, engine, host, out_dir, log, record, done):
        self.args, self.engine, self.host, self.out_dir = args, engine, host, out_dir
        self.log, self.record, self.done = log, record, done
        self.mid = args.n_seq // 2
        self.computed = 0

    def run(self, videos, log, lead, world):
        """Every video of this rank's share; then (rank 0) the log's averages and the end line."""
        wins = [window_indices(v.n, self.args.n_seq, border=self.args.border) for v in videos]
        share = window_spans([len(w) for w in wins], dist.rank(), world)
        rows = np.zeros((sum(len(w) for w in wins), 3))
        todo = sum(1 for i, (start, stop) in share.items() for k in range(start, stop)
                   if (videos[i].name, k) not in self.done)
        t_run = time.perf_counter()  # host time: every frame is numpy by then
        try:
            with VideoProgress(todo, enabled=lead) as self.bar:
                for i, (v, vid_rows) in enumerate(zip(videos, per_video(rows, wins))):
                    if i in share:
                        self._video(v, wins[i], *share[i], vid_rows)
            if world == 1:
                log_total(log, videos, rows, wins)
            else:
                rows = dist.merge_owned(rows)
                if lead:
                    self._encode_split_videos(videos, wins, world)
                    for v, w, r in zip(videos, wins, per_video(rows, wins)):
                        for k, row in enumerate(r):
                            log(frame_line(v, stem(v, w[k][self.mid]), row))
                        log_video(log, v, r)
                    log_total(log, videos, rows, wins)
                self.computed = int(dist.all_sum([self.computed])[0])
        except BaseException as e:
            log.close()
            append_line(log.path, ending(e, self.computed, todo))
            raise
        kept = f' (and {len(self.done)} kept from the earlier run)' if self.done else ''
        log(f'Results in {self.out_dir}')
        log(f'completed: {self.computed} frames of {len(videos)} video(s){kept} in '
            f'{time.perf_counter() - t_run:.1f} s')  # host time: every frame is numpy by then
        log.close()
        self.record.finish()
        return {v.name: [(float(p), float(q)) for p, q, _ in r] for v, r in zip(videos, per_video(rows, wins))
                if v.gt is not None and v.no_metric is None}

    def _video(self, v, windows, start, stop, rows):
        """Windows start..stop-1 of video ``v``: the finished ones (a resumed run) logged from the
        record, the others run, scored and written; ``rows``: its [PSNR, SSIM, seconds]."""
        k0 = start
        while (v.name, k0) in self.done and k0 < stop:
            rows[k0] = self.done[(v.name, k0)]
            self._logged(v, windows, k0, rows)
            k0 += 1
        video = self._video_file(v, windows, start, stop)
        if video is not None and os.path.isfile(video.path) and k0 == stop:  # finished before a kill
            remove_parts(self.out_dir, v.name)
        elif k0 < stop or video is not None:
            self.bar.video(v.name, stop - k0)
            keep = is_video(v.lr) and (video is None or isinstance(self.record, Progress))
            self.host.open(OutputSpec(
                v.name, self.out_dir, v.lr, v.shape, self.args.scale, v.gt, v.gt_info,
                windows[k0][self.mid] if k0 < stop else 0, v.no_metric is None, self.args.save_image,
                self.args.save_kernel, video, keep,
                [self._part(v, windows, k) for k in range(start, k0)] if video is not None else [],
                self.record.path))
            if k0 < stop:
                first = min(windows[k0])
                source = FrameSource(frames(v, self.args.size_must_mode, first), windows, first=first)
                for k, recons, kernel, secs in self.engine.windows(source, windows, k0, stop):
                    rows[k, 2] = secs
                    t = windows[k][self.mid]
                    for result in self.host.frame(k, t, stem(v, t), to_uint8(recons), kernel, secs):
                        self._finished(v, windows, rows, *result)
            for result in self.host.close():
                self._finished(v, windows, rows, *result)
        if self.log is not None:
            log_video(self.log, v, rows)

    def _video_file(self, v, windows, start, stop):
        """The mp4 of a video file that this process runs whole (else None: frame folders, or a
        video split between ranks, which rank 0 encodes at the end)."""
        if not is_video(v.lr) or (start, stop) != (0, len(windows)):
            return None
        return self._mp4(v)

    def _mp4(self, v):
        """The output video file of video file ``v``."""
        return VideoFile(os.path.join(self.out_dir, v.name + '.mp4'), v.fps, self.args.crf, v.lr, v.info.has_audio)

    def _part(self, v, windows, k):
        return part_path(self.out_dir, v.name, stem(v, windows[k][self.mid]), self.args.save_image)

    def _finished(self, v, windows, rows, k, psnr, ssim):
        """Window k's outputs are written and recorded: its scores logged."""
        rows[k, :2] = psnr, ssim
        self._logged(v, windows, k, rows)
        self.computed += 1
        self.bar.update(**({'psnr': f'{psnr:.3f}'} if v.gt is not None and v.no_metric is None else {}))

    def _logged(self, v, windows, k, rows):
        if self.log is not None:
            self.log(frame_line(v, stem(v, windows[k][self.mid]), rows[k]))

    def _encode_split_videos(self, videos, wins, world):
        """Rank 0, once every rank is done: the video files no one rank ran whole, from their parts."""
        counts = [len(w) for w in wins]
        whole = {i for r in range(world) for i, span in window_spans(counts, r, world).items()
                 if span == (0, counts[i])}
        for i, v in enumerate(videos):
            if not is_video(v.lr) or i in whole:
                continue
            self.host.open(OutputSpec(v.name, self.out_dir, v.lr, v.shape, self.args.scale, None, None, 0, False,
                                      self.args.save_image, False, self._mp4(v), False,
                                      [self._part(v, wins[i], k) for k in range(counts[i])], None))
            self.host.close()
        remove_parts(self.out_dir)
