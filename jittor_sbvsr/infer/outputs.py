"""Everything a run writes for one video, and its scores: the one place its writers are built.

A :class:`VideoOutputs` takes the video's SR frames in order and, for each,
reads its ground truth and scores it (PSNR/SSIM), writes the PNG frame, the
kernel (``.npy`` and picture), feeds the video file's encoder, and then
appends the frame's line to the run's record (resume.py). It runs in the
host worker (host.py), beside the network; it imports no Jittor.

A video file's output (mp4) is encoded from the frames in order by one
ffmpeg (data/video.py:VideoWriter, atomic). Its frames are also kept as
lossless PNG "parts" (the PNG outputs themselves with ``--save_image``)
until the mp4 is in place, so that a video can be completed from them:
by a resumed run (resume.py) after the frames an interrupted run finished,
or by rank 0 under ``mpirun`` for a video split between ranks (split.py).
The same frames with the same x264 settings give the same file.
"""
import os
import shutil
from collections import namedtuple

from ..data.folders import check_gt_size
from ..data.images import read_frame
from ..data.kernels import kernel_image
from ..data.video import VideoWriter
from ..metrics.psnr_ssim import psnr_ssim
from ..utils import save_npy_atomic, save_png_atomic
from .inputs import GroundTruth, is_video
from .resume import record_frame

PARTS = '.video_frames'  # a video's frames (without --save_image), until its mp4 is in place

# What one video's outputs need: its name, the run's folder, its LR source (named in errors) and
# size, the scale, its ground truth (source, probe, first frame; None: no scores), whether to
# score, the flags --save_image / --save_kernel, the mp4 (VideoFile) or None, whether to keep
# parts, the frames ``feed`` to encode first (a resumed or split video's finished frames), and
# the run's record (resume.py; None: none is kept).
OutputSpec = namedtuple('OutputSpec', 'name out_dir lr lr_hw scale gt gt_info gt_first score '
                                      'save_image save_kernel video keep_parts feed record')
VideoFile = namedtuple('VideoFile', 'path fps crf source info')  # info: the source's probe


def part_path(out_dir, name, stem, save_image):
    """Where a video file's SR frame is kept until its mp4 is done: its PNG output, or a part."""
    if save_image:
        return os.path.join(out_dir, name, f'{stem}.png')
    return os.path.join(out_dir, PARTS, name, f'{stem}.png')


def remove_parts(out_dir, name=None):
    """The parts of video ``name`` (None: the whole parts folder) once its mp4 is in place."""
    where = os.path.join(out_dir, PARTS) if name is None else os.path.join(out_dir, PARTS, name)
    shutil.rmtree(where, ignore_errors=True)
    if name is not None:
        try:
            os.rmdir(os.path.join(out_dir, PARTS))  # the last video's: the folder goes too
        except OSError:
            pass


class VideoOutputs:
    """One video's outputs, frame after frame (``frame``), then ``close`` (or ``abort``)."""

    def __init__(self, spec, score=psnr_ssim):
        self.spec, self._score = spec, score  # score: (sr, gt) -> (PSNR, SSIM) (host.py: maybe the scorer's)
        self._gt = GroundTruth(spec.gt, spec.gt_info, spec.gt_first) if spec.gt is not None else None
        self._writer = None
        # held open until the video ends: a stray worker of a killed run writes to its own record,
        # never to the one a resumed run put in its place
        self._record = open(spec.record, 'a', encoding='utf-8') if spec.record else None
        if spec.video is not None:
            f = spec.video
            self._writer = VideoWriter(f.path, f.fps, crf=f.crf, source=f.source, info=f.info)
            for p in spec.feed:
                self._writer.write(read_frame(p))

    def frame(self, k, t, stem, sr, kernel, secs):
        """Window k's outputs (of frame t) written and recorded with its network time ``secs``;
        returns its (PSNR, SSIM), (0, 0) when it is not scored."""
        s = self.spec
        row = (0.0, 0.0)
        if self._gt is not None:
            gt, gt_path = self._gt(t)
            check_gt_size(s.lr_hw, gt.shape, s.scale, s.lr if is_video(s.lr) else s.lr[t], gt_path)
            if s.score:
                row = self._score(sr, gt[:sr.shape[0], :sr.shape[1]])  # the size-multiple crop
        if self._writer is not None:
            self._writer.write(sr)
        if s.save_image:
            save_png_atomic(os.path.join(s.out_dir, s.name, f'{stem}.png'), sr)
        elif s.keep_parts:
            save_png_atomic(part_path(s.out_dir, s.name, stem, False), sr)
        if s.save_kernel:
            save_npy_atomic(os.path.join(s.out_dir, s.name, 'kernel', f'{stem}.npy'), kernel)
            save_png_atomic(os.path.join(s.out_dir, s.name, 'kernel', f'{stem}.png'), kernel_image(kernel))
        row = tuple(float(x) for x in row)
        if self._record is not None:
            record_frame(self._record, s.name, k, (*row, secs))
        return row

    def close(self):
        """The mp4 moved into place (its parts removed after); ground truth closed. Returns the
        writer's notes: what the mp4 had to leave out of its source, one line each."""
        notes = []
        try:
            if self._writer is not None:
                self._writer.close()
                notes = self._writer.notes
                if not self.spec.save_image:
                    remove_parts(self.spec.out_dir, self.spec.name)
        finally:
            self.abort()
        return notes

    def abort(self):
        """Stop without the mp4 (its encoder's temporary file removed); written frames stay."""
        if self._record is not None:
            self._record.close()
            self._record = None
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if self._gt is not None:
            self._gt.close()
            self._gt = None
