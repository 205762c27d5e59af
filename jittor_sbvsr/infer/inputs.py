"""The inputs of an inference run: listed, paired with their ground truth, checked, then read.

``check_videos`` checks every frame of every video before anything is
written, probing each video file once (the :class:`Video` keeps what the
probe found); ``frames`` and ``GroundTruth`` read them during the run, from
any frame on (an MPI rank's share, a resumed run): a video file is then
decoded from that frame, ffmpeg skipping the ones before.
"""
import os
import time
from collections import namedtuple

from ..data import folders
from ..data.folders import check_gt_size, check_pairs, check_same_size, frames_by_name, list_videos, pair_frames
from ..data.images import read_frame
from ..data.windows import check_multiple, crop_to_multiple, window_indices
from ..data.video import VideoInfo, VideoReader, carry_notes, frame_range, is_video_file, part_of, probe
from ..errors import UserError
from ..metrics.psnr_ssim import metric_problem
from ..utils.files import is_temp_name

# one video of a run: its frames (a list of frame files, or a video file's path) and ground truth
# (the same kinds, or None), the LR size, why it gets no metrics (None: it does), its frame count and frame rate (video files; None for frame folders),
# and what the probe of the LR and of the GT video file found (data/video.py:VideoInfo; else None)
Video = namedtuple('Video', 'name lr gt shape no_metric n fps info gt_info')


def is_video(src):
    """True for a video file's path, False for a list of frame files."""
    return isinstance(src, str)


def list_inputs(path, what):
    """``[(name, source)]``: a video file, a folder of video files (name: file stem; source:
    its path), or frame folders (list_videos; source: the frame paths)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [(folders.stem(path), path)]
    if os.path.isdir(path):
        entries = sorted(e.name for e in folders.scan(path) if not e.name.startswith('.'))
        files = [n for n in entries if is_video_file(n) and os.path.isfile(os.path.join(path, n))]
        if files:
            others = [n for n in entries if n not in files and not is_temp_name(n)]
            if others:
                raise UserError(f'{path}: holds video files and other things ({", ".join(others[:3])}); '
                                'give a folder of video files or a folder of frame folders')
            return list(frames_by_name([os.path.join(path, n) for n in files], path, 'video').items())
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


def _check_gt(name, lr, gt, n, hw, scale):
    """A ground truth paired by index (either side a video file): same frame count, scale x size.
    Returns (frames and files checked, the GT video's probe or None)."""
    where = gt if is_video(gt) else os.path.dirname(gt[0])
    info = probe(gt) if is_video(gt) else None
    n_gt = info.n_frames if info else len(gt)
    if n_gt != n:
        raise UserError(f'{where}: ground truth of video {name} has {n_gt} frames, the input {n}; '
                        'frames of a video file pair by index, so the counts must match')
    for g in ([gt] if info else gt):
        check_gt_size(hw, info.size if info else read_frame(g).shape, scale, lr if is_video(lr) else lr[0], g)
    return (1 if info else n_gt), info


def _part(span, name, lr, gt, info, gt_info, notes):
    """Video ``name`` cut to --start/--duration: (frame count, lr, gt, info, gt_info) of the part (a
    video file's infos say which part: the reader decodes it, the writer cuts sound and subtitles
    to it; frame lists are sliced). Frame folders have no times: frames only. ``span``: --start and
    --duration as plan.span reads them."""
    start, duration = span
    if info is None:
        if any(p is not None and p[0] == 'seconds' for p in (start, duration)):
            raise UserError(f'{os.path.dirname(lr[0])}: frames in a folder have no times: give --start and '
                            '--duration in frames (e.g. --start 120f --duration 50f)')
        k0, k1 = frame_range(os.path.dirname(lr[0]), VideoInfo(len(lr), None, 1, False), start, duration)
        lr = lr[k0:k1]
    else:
        k0, k1 = frame_range(lr, info, start, duration)
        info = part_of(info, k0, k1)
        notes.append(f'video {name}: frames {k0}..{k1 - 1} of {info.part.whole} (from {float(info.part.start):.3f} s)')
    if gt is not None:
        if is_video(gt):
            gt_info = part_of(gt_info, k0, k1)
        else:
            gt = gt[k0:k1]
    return k1 - k0, lr, gt, info, gt_info


def check_videos(inputs, gt_path, n_seq, scale, m, border, notes, span=(None, None)):
    """Every video of ``inputs`` (list_inputs) checked before anything is written: [Video].

    Frame folders: each frame must decode, the frames of a video must have
    one size, and each ground-truth frame must pair with its LR frame (by
    name) and be exactly ``scale`` x its size. Video files: ffmpeg must
    decode them (probe), with at least a window's frames; a ground truth
    beside a video file pairs by index and must have as many frames. The
    size-multiple crop then cuts LR and GT the same way. A video whose frames
    are too small for PSNR/SSIM still runs; its ``no_metric`` says why.
    """
    videos = []
    t0, n = time.perf_counter(), 0  # host time: file checks
    for name, lr, gt in _pair_videos(inputs, gt_path, notes):
        fps = info = gt_info = None
        if is_video(lr):
            info = probe(lr)
            notes.extend(carry_notes(lr, info, name + '.mp4'))
            check_multiple(*info.size[:2], m, lr)
            count, first = info.n_frames, (*info.size[:2], lr)
            fps = info.fps
            if fps is None:
                fps = 25
                notes.append(f'note: {lr} states no frame rate; its output is written at 25 fps')
            n += 1
        else:
            count = len(lr)
            frames_by_name(lr, os.path.dirname(lr[0]))  # one output file per frame
            pairs = list(zip(lr, gt)) if gt is not None and not is_video(gt) else [(p, None) for p in lr]
            # every frame decoded here, once: one that does not decode is found before any output
            h, w = check_pairs(pairs, scale, lambda p: read_frame(p).shape[:2])
            check_multiple(h, w, m, lr[0])
            first = (h, w, lr[0])
            n += sum(1 + (g is not None) for _, g in pairs)
        window_indices(count, n_seq, border=border, name=name)  # enough frames
        if gt is not None and (is_video(lr) or is_video(gt)):
            checked, gt_info = _check_gt(name, lr, gt, count, first[:2], scale)
            n += checked
        if span != (None, None):
            count, lr, gt, info, gt_info = _part(span, name, lr, gt, info, gt_info, notes)
            window_indices(count, n_seq, border=border, name=name)
        size = (first[0] - first[0] % m, first[1] - first[1] % m)
        why = None if gt is None else metric_problem(size[0] * scale, size[1] * scale)
        if why:
            notes.append(f'note: video {name}: no PSNR/SSIM, {why}; its SR frames are still written')
        videos.append(Video(name, lr, gt, first[:2], why, count, fps, info, gt_info))
    notes.append(f'checked {n} frames and video files of {len(videos)} video(s) in '
                 f'{time.perf_counter() - t0:.1f} s')  # host time: file checks
    return videos


def frames(video, m, first=0):
    """A video's LR frames from frame ``first`` on, one at a time, cropped to the size multiple
    (frame files re-checked against the video's first frame: they may change during a run)."""
    if is_video(video.lr):
        with VideoReader(video.lr, video.info) as reader:
            for f in reader.frames(first):
                yield crop_to_multiple(f, m, video.lr)
        return
    for p in video.lr[first:]:
        f = read_frame(p)
        check_same_size(p, f.shape, video.lr[0], video.shape)
        yield crop_to_multiple(f, m, p)


class GroundTruth:
    """Ground-truth frame t of a video, asked for in increasing t from ``first`` on (a video file is
    decoded once, from that frame; ``info``: its probe, from check_videos)."""

    def __init__(self, gt, info=None, first=0):
        self.gt, self.info, self._it, self._next = gt, info, None, first

    def __call__(self, t):
        if not is_video(self.gt):
            return read_frame(self.gt[t]), self.gt[t]
        if self._it is None:
            self._reader = VideoReader(self.gt, self.info)
            self._it = self._reader.frames(self._next)
        while True:
            f, self._next = next(self._it), self._next + 1
            if self._next == t + 1:
                return f, self.gt

    def close(self):
        if self._it is not None:
            self._it.close()
            self._reader.close()


def stem(video, t):
    """The output name of frame t of ``video``: its LR file's, or the index for a video file."""
    return f'{t:08d}' if is_video(video.lr) else folders.stem(video.lr[t])
