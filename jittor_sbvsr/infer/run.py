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
import contextlib
import dataclasses
import json
import os
import time
from typing import Mapping, Optional, Tuple

import numpy as np

from .. import dist, runtime
from ..data.windows import to_uint8, window_indices
from ..weights.arch import describe
from ..utils import Logger, ensure_dir
from ..utils.files import remove_stale_temps, stale_note
from ..utils.lock import FolderLock
from ..utils.memory import format_size
from .baseline import demo_verdict, log_bicubic
from .compare import write_compare
from .engine import VideoSR
from .frames import FrameSource
from .host import Host
from .inputs import frames, is_video, stem
from .outputs import OutputSpec, VideoFile, part_path, remove_parts
from .report import Quiet, VideoProgress, append_line, averages, ending, frame_line, log_total, log_video, per_video
from .plan import demo_untrained
from .resume import NoRecord, Progress
from .split import window_spans


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """One video of a run: its output frames' (PSNR, SSIM, network seconds), in order, and their
    averages (None: not scored)."""
    frames: Tuple[Tuple[float, float, float], ...]
    psnr: Optional[float]
    ssim: Optional[float]


@dataclasses.dataclass(frozen=True)
class Result:
    """What a run measured: per video and over every scored frame (the log's averages, the same
    numbers), the frames this run computed (not those a --resume kept) and its seconds;
    ``bicubic_psnr``: bicubic's PSNR over the same frames (the log's "Total bicubic" line)."""
    out_dir: str
    videos: Mapping[str, VideoResult]
    psnr: Optional[float]
    ssim: Optional[float]
    frames: int
    seconds: float
    bicubic_psnr: Optional[float] = None


def run(plan):
    """Carry out ``plan`` (plan.make_plan); returns its Result."""
    lead, world = dist.rank() == 0, plan.world
    sig = plan.signature()
    with contextlib.ExitStack() as stack:  # left in reverse: the worker's last writes before the lock goes
        stale = None
        if lead:
            ensure_dir(plan.out_dir)
            stack.enter_context(FolderLock(plan.out_dir))  # one run per folder (utils/lock.py)
            stale = stale_note(remove_stale_temps(plan.out_dir, recursive=True))
        host = stack.enter_context(Host(score=plan.scored))  # started now: its start-up overlaps the model's
        net = plan.weights.model()
        engine = VideoSR(net, plan.n_seq, reuse=not plan.no_reuse, tile=plan.tile, overlap=plan.tile_overlap,
                         fused=not plan.no_fused, compose=not plan.no_compose, winograd=not plan.no_winograd,
                         max_memory=plan.budget)
        dist.barrier()  # no rank writes before rank 0 removed the stale temporary files
        record = Progress(plan.out_dir, sig, plan.done) if world == 1 else NoRecord()
        log = (Logger(os.path.join(plan.out_dir, f"inference_log_{time.strftime('%Y%m%d-%H%M%S')}.txt"))
               if lead else Quiet())
        for line in plan.header():
            log(line)
        log(f'runtime: {runtime.describe()}')
        log(f'Loaded model from {plan.model_path} ({plan.device}): {describe(plan.arch)}')
        log(f'engine: {engine.model.describe()}')
        if world > 1:
            log(f'MPI: {world} ranks, each runs a share of the windows; this log has them all, in order')
        if plan.resume:
            log(f'resume: {len(plan.done)} frame(s) finished by the earlier run are kept; their lines below are '
                'from its record')
            if plan.earlier_budget is not None and plan.budget == plan.earlier_budget and plan.max_memory is None:
                log(f"memory budget: {format_size(plan.budget)}, the earlier run's (it tiles as that run did)")
        for line in plan.notes + ((stale,) if stale else ()):
            log(line)
        return _Share(plan, engine, host, log, record).run()


class _Share:
    """This process's windows of the run, video after video: the network here, the outputs in the
    host worker, which records them; the results come back in order and are logged (``log``: one
    process)."""

    def __init__(self, plan, engine, host, log, record):
        self.plan, self.engine, self.host, self.out_dir = plan, engine, host, plan.out_dir
        self.log, self.record, self.done = log, record, plan.done
        self.live = plan.world == 1  # frame lines as they come; under mpirun rank 0 logs them all at the end
        self.mid = plan.n_seq // 2
        self.computed = 0
        self.notes = {}  # under mpirun: {video name: the writer's notes}, logged by rank 0 with its lines

    def run(self):
        """Every video of this rank's share; then (rank 0) the log's averages and the end line;
        returns the run's Result."""
        lead, world, videos = dist.rank() == 0, self.plan.world, self.plan.videos
        wins = [window_indices(v.n, self.plan.n_seq, border=self.plan.border) for v in videos]
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
                log_total(self.log, videos, rows, wins)
            else:
                rows = dist.merge_owned(rows)
                notes = {}
                for text in dist.gather_text(json.dumps(self.notes)):
                    for name, lines in json.loads(text).items():
                        notes.setdefault(name, []).extend(lines)
                if lead:
                    self._encode_split_videos(videos, wins, world)
                    for v, w, r in zip(videos, wins, per_video(rows, wins)):
                        for k, row in enumerate(r):
                            self.log(frame_line(v, stem(v, w[k][self.mid]), row))
                        for line in notes.get(v.name, []):
                            self.log(line)
                        log_video(self.log, v, r)
                    log_total(self.log, videos, rows, wins)
                self.computed = int(dist.all_sum([self.computed])[0])
            vs_bicubic = None  # (model, bicubic) PSNR over the scored frames
            if lead:
                vs_bicubic = log_bicubic(self.log, self.plan, videos, wins, rows)
                if self.plan.demo and vs_bicubic is not None:
                    self.log(demo_verdict(*vs_bicubic, demo_untrained(self.plan.model_path)))
                if self.plan.compare:
                    for v, w in zip(videos, wins):
                        path, why = write_compare(self.plan, self.out_dir, v, w)
                        self.log(f'compare: {path}' if path else why)
        except BaseException as e:
            self.log.close()
            append_line(self.log.path, ending(e, self.computed, todo))
            raise
        kept = f' (and {len(self.done)} kept from the earlier run)' if self.done else ''
        seconds = time.perf_counter() - t_run  # host time: every frame is numpy by then
        self.log(f'Results in {self.out_dir}')
        self.log(f'completed: {self.computed} frames of {len(videos)} video(s){kept} in {seconds:.1f} s')
        self.log.close()
        self.record.finish()
        each, total = averages(videos, rows, wins)
        return Result(self.out_dir, {v.name: VideoResult(tuple(tuple(float(x) for x in row) for row in r),
                                                         *each.get(v.name, (None, None)))
                                     for v, r in zip(videos, per_video(rows, wins))},
                      *(total or (None, None)), self.computed, seconds,
                      vs_bicubic and vs_bicubic[1])

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
            done = lambda result: self._finished(v, windows, rows, *result)  # noqa: E731
            keep = is_video(v.lr) and (video is None or isinstance(self.record, Progress))
            self.host.open(OutputSpec(
                name=v.name, out_dir=self.out_dir, lr=v.lr, lr_hw=v.shape, scale=self.plan.scale, gt=v.gt,
                gt_info=v.gt_info, gt_first=windows[k0][self.mid] if k0 < stop else 0, score=v.no_metric is None,
                save_image=self.plan.save_image, save_kernel=self.plan.save_kernel, video=video, keep_parts=keep,
                feed=[self._part(v, windows, k) for k in range(start, k0)] if video is not None else [],
                record=self.record.path))
            if k0 < stop:
                first = min(windows[k0])
                source = FrameSource(frames(v, self.plan.size_must_mode, first), windows, first=first)
                for k, recons, kernel, secs in self.engine.windows(source, windows, k0, stop):
                    rows[k, 2] = secs
                    t = windows[k][self.mid]
                    self.host.frame(k, t, stem(v, t), to_uint8(recons), kernel, secs, done)
            notes = self.host.close(done)
            if self.live:
                for line in notes:
                    self.log(line)
            else:
                self.notes.setdefault(v.name, []).extend(notes)
        if self.live:
            log_video(self.log, v, rows)

    def _video_file(self, v, windows, start, stop):
        """The mp4 of a video file that this process runs whole (else None: frame folders, or a
        video split between ranks, which rank 0 encodes at the end)."""
        if not is_video(v.lr) or (start, stop) != (0, len(windows)):
            return None
        return self._mp4(v)

    def _mp4(self, v):
        """The output video file of video file ``v``."""
        return VideoFile(os.path.join(self.out_dir, v.name + '.mp4'), v.fps, self.plan.crf, v.lr, v.info)

    def _part(self, v, windows, k):
        return part_path(self.out_dir, v.name, stem(v, windows[k][self.mid]), self.plan.save_image)

    def _finished(self, v, windows, rows, k, psnr, ssim):
        """Window k's outputs are written and recorded: its scores logged."""
        rows[k, :2] = psnr, ssim
        self._logged(v, windows, k, rows)
        self.computed += 1
        self.bar.update(**({'psnr': f'{psnr:.3f}'} if v.gt is not None and v.no_metric is None else {}))

    def _logged(self, v, windows, k, rows):
        if self.live:
            self.log(frame_line(v, stem(v, windows[k][self.mid]), rows[k]))

    def _encode_split_videos(self, videos, wins, world):
        """Rank 0, once every rank is done: the video files no one rank ran whole, from their parts."""
        counts = [len(w) for w in wins]
        whole = {i for r in range(world) for i, span in window_spans(counts, r, world).items()
                 if span == (0, counts[i])}
        for i, v in enumerate(videos):
            if not is_video(v.lr) or i in whole:
                continue
            self.host.open(OutputSpec(
                name=v.name, out_dir=self.out_dir, lr=v.lr, lr_hw=v.shape, scale=self.plan.scale, gt=None,
                gt_info=None, gt_first=0, score=False, save_image=self.plan.save_image, save_kernel=False,
                video=self._mp4(v), keep_parts=False, feed=[self._part(v, wins[i], k) for k in range(counts[i])],
                record=None))
            for line in self.host.close():  # fed from the parts: no frame results
                self.log(line)
        remove_parts(self.out_dir)
