"""Video files in and out, one frame at a time, through the ffmpeg that imageio-ffmpeg ships.

No system ffmpeg is needed or used: ``imageio_ffmpeg.get_ffmpeg_exe()`` is the
binary of the pinned wheel. We drive it ourselves rather than through
``imageio_ffmpeg.read_frames``/``write_frames`` because we need things those
do not offer: decoding with ``-fps_mode passthrough`` (every decoded frame
exactly once, so the count :func:`probe` reports is what the reader yields),
``file:`` paths (a name with ``:`` is not a protocol), a one-line error naming
our file, and a two-step atomic write that adds the source's audio.

- :func:`probe`: frame count, size, fps and audio without decoding the video.
- :class:`VideoReader`: uint8 HxWx3 RGB frames, streamed (memory does not grow
  with the video's length), optionally from frame ``start`` to ``stop``.
- :class:`VideoWriter`: frames in, H.264 file out, written atomically, with the
  audio of ``audio_from`` copied in.

Bad input (missing file, no video stream, a file ffmpeg cannot decode) is a
:class:`~jittor_sbvsr.errors.UserError` naming the file; wrong arrays handed
to the writer are a ``ValueError`` (a bug in the caller, not in the input).

One file: reader, writer and probe share the ffmpeg command-line
conventions and its error parsing.
"""
import os
import re
import subprocess
import sys
import tempfile
from collections import namedtuple
from fractions import Fraction

import numpy as np

from ..errors import UserError, read_error
from ..utils.files import atomic_save, ensure_dir, temp_name
from . import ffmpeg_info as info_text

__all__ = ['VIDEO_EXTENSIONS', 'WRITE_FORMATS', 'DEFAULT_CRF', 'VideoInfo', 'is_video_file',
           'ffmpeg_exe', 'probe', 'carry_notes', 'parse_position', 'frame_range', 'part_of', 'VideoReader',
           'VideoWriter']

# What we treat as a video when a folder is scanned; ffmpeg decodes all of these.
VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mkv', '.mov', '.avi', '.webm', '.wmv', '.flv', '.mpg',
                    '.mpeg', '.ts', '.m2ts', '.mts', '.3gp', '.ogv', '.y4m')

# Containers that hold H.264 (webm and avi do not, or not cleanly): extension -> ffmpeg muxer.
WRITE_FORMATS = {'.mp4': 'mp4', '.m4v': 'mp4', '.mov': 'mov', '.mkv': 'matroska'}

# x264 CRF 10: near-lossless (x264's default is 23; ~18 is the usual "visually lossless"),
# so coding adds little to what 4:2:0 itself costs. Measured on smooth, SR-like frames
# (tests/test_video.py): 41.1 dB PSNR against the frames written, where 4:2:0 alone (CRF 0)
# gives 42.5, CRF 12 40.5 and CRF 18 38.0. CRF 0 (truly lossless) needs the High 4:4:4
# Predictive profile, which browsers, phones and QuickTime do not play.
DEFAULT_CRF = 10

# Accurate rounding and full-resolution chroma in both RGB <-> YUV conversions: on the test's
# frames 4:2:0 keeps 42.5 dB with them, 31.6 dB with ffmpeg's default conversion.
_SWS = 'accurate_rnd+full_chroma_int'

VideoInfo = namedtuple('VideoInfo', 'n_frames size fps has_audio sar time_base pts colour streams chapters part',
                       defaults=(Fraction(1), None, None, None, (), False, None))
VideoInfo.__doc__ = """What :func:`probe` found: ``n_frames`` (int), ``size`` ((h, w) of the
decoded, upright frames), ``fps`` (``Fraction``, e.g. 30000/1001; None if the file states
none), ``has_audio`` (bool), ``sar`` (the upright frames' pixel aspect, ``Fraction``),
``time_base`` (``Fraction``) and ``pts`` (sorted ticks of it from the file's start, or None),
``colour`` (ffmpeg_info.Colour), ``streams`` (every ffmpeg_info.Stream), ``chapters`` (bool),
``part`` (None: the whole file; else a :class:`Part`, and the other fields describe that part)."""

Part = namedtuple('Part', 'first whole start end')
Part.__doc__ = """A part of a video file (:func:`part_of`): frames ``first`` .. ``first + n_frames - 1``
of its ``whole`` frames, shown from ``start`` (s, Fraction) until ``end`` (the next frame's time;
None: the file's end)."""


def is_video_file(path):
    """True for a file name with a video extension (case-insensitive); the file is not opened."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith('.') and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def ffmpeg_exe():
    """The ffmpeg binary of the imageio-ffmpeg wheel (never a system one, never downloaded)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError('video files need the imageio-ffmpeg package: run env/setup.sh') from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise UserError(f'imageio-ffmpeg has no usable ffmpeg binary ({e}): run env/setup.sh') from None


def _arg(path):
    """``path`` as ffmpeg's input/output argument: ``file:`` so that ``a:b.mp4`` is not a protocol."""
    return 'file:' + os.fspath(path)


def _popen_kwargs():
    """Run ffmpeg outside our process group: Ctrl-C reaches Python only, which then stops
    ffmpeg and removes temporary files, instead of ffmpeg dying first and a broken pipe
    being reported as an encoding error."""
    if sys.platform == 'win32':
        return {'creationflags': subprocess.CREATE_NEW_PROCESS_GROUP}
    return {'start_new_session': True}


def _check_readable(path):
    """A missing, unreadable or folder path gives the project's usual one-line error."""
    try:
        with open(path, 'rb'):
            pass
    except OSError as e:
        raise read_error(path, e, expected='a video file') from None


def _probe_run(path):
    """ffmpeg in one pass: the input report (stderr), every packet of the video stream
    copied into ``framecrc`` rows (stdout: count and presentation times, nothing
    decoded), and one decoded frame whose output report gives the size and aspect
    after ffmpeg's auto-rotation of phone clips."""
    path = os.fspath(path)
    _check_readable(path)
    arg = _arg(path)
    cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+info', '-i', arg,
           '-map', '0:V:0?', '-c', 'copy', '-f', 'framecrc', 'pipe:1',
           '-map', '0:V:0?', '-frames:v', '1', '-pix_fmt', 'rgb24', '-f', 'null', '-']
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, **_popen_kwargs())
    except OSError as e:
        raise UserError(f'cannot run ffmpeg ({e.strerror or e}): run env/setup.sh') from None
    err = r.stderr.decode('utf-8', 'replace')
    section = info_text.input_section(err)
    if section and info_text.main_video(section) is None:
        raise UserError(f'{path}: no video stream')
    if r.returncode != 0 or not section:
        raise UserError(f'{path}: cannot decode video: {info_text.reason(err, arg)}')
    return section, err, r.stdout.decode('utf-8', 'replace')


def probe(path):
    """:class:`VideoInfo` of a video file, without decoding it (one frame aside).

    The count is that of the video stream's packets (a stream copy, nothing
    decoded), since ffmpeg does not report the count that some containers store;
    it is exact for intact files and is what :class:`VideoReader` yields (which
    checks it). The size and ``sar`` are those of the frames the reader gives:
    upright, after the rotation phones store as metadata. ``pts`` are the
    packets' presentation times in ``time_base`` ticks from the file's start,
    sorted; None when the file's are broken (missing or repeated), and the
    writer then spaces frames evenly at ``fps`` (:func:`carry_notes` says so).
    """
    path = os.fspath(path)
    section, err, rows = _probe_run(path)
    video = info_text.main_video(section)
    tb, n, pts = info_text.packet_times(rows)
    if n == 0:
        raise UserError(f'{path}: the video stream has no frames')
    lines = [line for _, line in info_text.untag(err)]
    out1 = [i for i, line in enumerate(lines) if line.startswith('Output #1')]
    decoded = info_text.main_video(lines[out1[0]:]) if out1 else None
    size = info_text.size_of(decoded) if decoded else None
    if size is None:
        size = info_text.size_of(video)
    if size is None:
        raise UserError(f'{path}: cannot decode video: no frame size in the stream')
    streams = tuple(info_text.streams(section))
    return VideoInfo(n, size, info_text.rate(video), any(s.kind == 'Audio' for s in streams),
                     info_text.sar_of(decoded or video), tb, pts,
                     info_text.colour_of(video, info_text.size_of(video) or size), streams,
                     info_text.has_chapters(section))


def _stop(proc):
    """End an ffmpeg child now (we no longer want its output) and reap it."""
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.wait()


def _tail(f):
    """Text of an ffmpeg stderr temp file (we keep stderr in a file: a pipe nobody reads
    could fill up and stall ffmpeg)."""
    f.seek(0)
    return f.read()[-20000:].decode('utf-8', 'replace')


_POSITION = re.compile(r'^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$')


def parse_position(text):
    """A place or length in a video, as ``--start``/``--duration`` take it: ``120f`` (frames),
    ``90``, ``90.5`` or ``1:30``, ``00:01:30.5`` (seconds). Returns ('frames', int) or
    ('seconds', Fraction); ValueError for anything else."""
    t = str(text).strip()
    if t.lower().endswith('f') and t[:-1].isdigit():
        return 'frames', int(t[:-1])
    m = _POSITION.match(t)
    if not m:
        raise ValueError(f"{text!r}: expected seconds (90, 90.5), [HH:]MM:SS[.ms] or a frame count (120f)")
    a, b, sec = m.groups()
    hours, minutes = (int(a), int(b)) if b is not None else (0, int(a or 0))
    return 'seconds', Fraction(sec) + 60 * minutes + 3600 * hours


def frame_times(info):
    """Each frame's presentation time (s, Fractions): the file's, or k / fps where they are broken."""
    if info.pts is not None and info.time_base is not None:
        return [info.time_base * t for t in info.pts]
    fps = Fraction(info.fps or 25)
    return [k / fps for k in range(info.n_frames)]


def frame_range(path, info, start=None, duration=None):
    """(first, stop) frame indices of ``--start``/``--duration`` (parse_position's values; None: from
    the first frame / to the last): the frames shown from ``start`` on, for ``duration``. One
    UserError line when the range holds no frame of the video."""
    times = frame_times(info)
    first, stop = 0, len(times)
    if start is not None:
        kind, v = start
        first = v if kind == 'frames' else next((k for k, t in enumerate(times) if t >= times[0] + v), len(times))
        if first >= len(times):
            raise UserError(f'{path}: --start {_say(start)} is past the video\'s end ({len(times)} frames, the '
                            f'last at {float(times[-1] - times[0]):.3f} s)')
    if duration is not None:
        kind, v = duration
        if kind == 'frames':
            stop = min(first + v, len(times))
        else:
            stop = next((k for k in range(first, len(times)) if times[k] >= times[first] + v), len(times))
        if stop <= first:
            raise UserError(f'{path}: --duration {_say(duration)} holds no frame')
    return first, stop


def _say(position):
    kind, v = position
    return f'{v}f' if kind == 'frames' else f'{float(v):g} s'


def part_of(info, first, stop):
    """The :class:`VideoInfo` of frames ``first`` .. ``stop - 1`` (of the whole file's ``info``): what
    the reader decodes and the writer times, cuts sound and subtitles to, from it."""
    times = frame_times(info)
    end = times[stop] if stop < len(times) else None
    pts = info.pts[first:stop] if info.pts is not None else None
    return info._replace(n_frames=stop - first, pts=pts, part=Part(first, info.n_frames, times[first], end))


class VideoReader:
    """uint8 HxWx3 RGB frames of a video file, decoded as they are asked for.

    ``VideoReader(path)`` probes the file at once (errors surface before any work; ``info``
    given, a caller's earlier :func:`probe`, it does not probe again) and
    exposes ``n_frames``, ``size`` (h, w), ``fps`` and ``has_audio``. Iterating, or
    ``frames(start, stop)``, runs one ffmpeg that writes raw frames into a pipe: memory
    is one frame plus the pipe's buffer, whatever the video's length. Each frame is a
    new array, so a sliding window may keep the ones it needs. A stream that decodes to
    another number of frames than the probe counted is a UserError, never a silent
    shift. Iterating again decodes again; ``close()`` (or leaving a ``with``) stops a
    running ffmpeg.
    """

    def __init__(self, path, info=None):
        self.path = os.fspath(path)
        self.info = probe(self.path) if info is None else info  # given: the caller probed it
        self.n_frames, self.size, self.fps, self.has_audio = self.info[:4]
        self.colour = self.info.colour or info_text.Colour(None, False, None)
        self._procs = set()

    def __len__(self):
        return self.n_frames

    @property
    def first(self):
        """The file's index of our frame 0 (a part's first frame)."""
        return self.info.part.first if self.info.part else 0

    @property
    def whole(self):
        """The file's frame count (ours, unless a part)."""
        return self.info.part.whole if self.info.part else self.n_frames

    def __iter__(self):
        return self.frames()

    def frames(self, start=0, stop=None):
        """Frames ``start`` .. ``stop - 1`` (default: to the end); frames before ``start``
        are dropped inside ffmpeg, before the RGB conversion."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if not 0 <= start <= stop:
            raise ValueError(f'bad frame range {start}:{stop} for {self.n_frames} frames')
        h, w = self.size
        arg = _arg(self.path)
        deep = info_text.bit_depth(self.colour.pix_fmt) > 8
        pix = 'rgb48le' if deep else 'rgb24'
        skip = start + self.first
        vf = ([f'select=gte(n\\,{skip})'] if skip else []) + [_decode_scale(w, h, self.colour), f'format={pix}']
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error',
               '-i', arg, '-map', '0:V:0', '-vf', ','.join(vf), '-fps_mode', 'passthrough',
               '-f', 'rawvideo', '-pix_fmt', pix, 'pipe:1']
        return self._run(cmd, arg, start, stop, h, w, deep)

    def _run(self, cmd, arg, start, stop, h, w, deep):
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log, **_popen_kwargs())
            self._procs.add(proc)
            try:
                for index in range(start, stop):
                    frame = np.empty((h, w, 3), np.uint16 if deep else np.uint8)
                    buf, got = memoryview(frame).cast('B'), 0
                    while got < buf.nbytes:
                        n = proc.stdout.readinto(buf[got:])
                        if not n:
                            break
                        got += n
                    if got < buf.nbytes:
                        proc.wait()
                        if proc.returncode:
                            raise UserError(f'{self.path}: cannot decode video: {info_text.reason(_tail(log), arg)}')
                        raise UserError(f'{self.path}: the video ends after {self.first + index} of its '
                                        f'{self.whole} frames (a damaged file?)')
                    yield _to_8bit(frame) if deep else frame
                if self.first + stop == self.whole and proc.stdout.read(1):
                    raise UserError(f'{self.path}: the video decodes to more than the '
                                    f'{self.whole} frames its stream holds (a damaged file?)')
            finally:
                _stop(proc)
                self._procs.discard(proc)

    def close(self):
        for proc in list(self._procs):
            _stop(proc)
        self._procs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decode_scale(w, h, colour):
    """The scale filter that turns decoded frames into RGB: the input's own range and matrix
    (ffmpeg_info.Colour) stated, not left to ffmpeg's guess for untagged files."""
    opts = [f'scale={w}:{h}', f'flags={_SWS}']
    if colour.matrix is not None:
        opts += [f'in_color_matrix={colour.matrix}', f"in_range={'pc' if colour.full_range else 'tv'}"]
    return ':'.join(opts)


def _to_8bit(frame):
    """16-bit RGB (a 10/12-bit input decoded at full precision) to uint8, rounded to nearest:
    round(x * 255 / 65535), exact on multiples of 257; no truncation steps, no dither."""
    return ((frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _x264_threads():
    """x264's own thread count (1.5 per core) from the machine's cores, not this process's.

    x264's output depends on its thread count, and left to itself it counts
    the cores this process may use: fewer under ``mpirun``, which binds each
    rank to its cores. Fixed here, the same frames give the same file.
    """
    return str(max(1, (os.cpu_count() or 1) * 3 // 2))


CarryPlan = namedtuple('CarryPlan', 'keep subtitle_codecs notes')


def _carry_plan(info, fmt):
    """What of ``info.streams`` goes into a ``fmt`` file beside our video: the streams kept
    (``keep``), the codec options converting subtitles the container cannot take as they are
    (text ones always for a part: a stream copy would keep what precedes the cut), and a
    line for each stream left out."""
    keep, codecs, notes, sub = [], [], [], 0
    mp4 = fmt in ('mp4', 'mov')
    first_video = next((s.index for s in info.streams if s.kind == 'Video'), None)
    for s in info.streams:
        out = None
        if s.kind == 'Audio':
            keep.append(s)
            continue
        if s.kind == 'Subtitle':
            text = s.codec in info_text.TEXT_SUBTITLES
            if mp4 and text:
                out = 'mov_text'
            elif not mp4:
                out = 'srt' if s.codec == 'mov_text' or (text and info.part is not None) else 'copy'
        elif s.kind == 'Attachment' and not mp4:
            keep.append(s)
            continue
        elif s.index == first_video or (s.kind == 'Data' and s.codec == 'bin_data' and info.chapters):
            continue  # ours replaces it; an mp4's chapter text track: the chapters carry it
        if out is None:
            ext = 'mkv' if fmt == 'matroska' else fmt
            notes.append(f'video stream #{s.index} ({s.codec}) left out: only the main video is restored'
                         if s.kind == 'Video' else
                         f'{s.kind.lower()} stream #{s.index} ({s.codec}) cannot go into the .{ext} output: left out')
            continue
        keep.append(s)
        codecs += [f'-c:s:{sub}', out]
        sub += 1
    return CarryPlan(keep, codecs, notes)


def carry_notes(source, info, out_path):
    """Lines to log for what a video written to ``out_path`` from ``source`` cannot keep."""
    fmt = WRITE_FORMATS.get(os.path.splitext(os.fspath(out_path))[1].lower(), 'mp4')
    lines = [f'{source}: {note}' for note in _carry_plan(info, fmt).notes]
    if info.pts is None:
        lines.append(f'{source}: its frame times are broken (a frame without a time, or two frames at one '
                     f'time): the output spaces its frames evenly at {float(info.fps or 25):g} fps')
    return lines


def _times(info):
    """(time base, frame ticks) the writer gives its frames: the source's, when it has sound ones."""
    if info is None or info.pts is None or info.time_base is None:
        return None
    return info.time_base, info.pts


def _pts_expression(ticks):
    """setpts expression giving frame N the time ``ticks[N] - ticks[0]``: runs of equal steps are
    one line each, found by a balanced tree of ``if(lt(N,...))`` (depth log2 of the runs; frames
    past the table keep the last step). Commas escaped for a filter graph."""
    runs, k, t0, n = [], 0, ticks[0], len(ticks)  # runs: (first frame, its tick, step)
    while k < n:
        if k + 1 == n:  # a last frame alone keeps the step before it
            runs.append((k, ticks[k] - t0, runs[-1][2] if runs else 1))
            break
        step, j = ticks[k + 1] - ticks[k], k + 1
        while j + 1 < n and ticks[j + 1] - ticks[j] == step:
            j += 1
        runs.append((k, ticks[k] - t0, step))  # frames k..j
        k = j + 1

    def node(lo, hi):
        if hi - lo == 1:
            n0, t, step = runs[lo]
            return f'{t}+(N-{n0})*{step}'
        mid = (lo + hi) // 2
        return f'if(lt(N\\,{runs[mid][0]})\\,{node(lo, mid)}\\,{node(mid, hi)})'
    return node(0, len(runs))


class VideoWriter:
    """Encode uint8 HxWx3 RGB frames, given one at a time, into an H.264 file.

    ``VideoWriter(path, fps, crf=DEFAULT_CRF, source=None, preset='medium')``;
    ``write(frame)`` for each frame, then ``close()``, or use it in a ``with`` block,
    which closes on success and discards everything on an exception (Ctrl-C included).

    Nothing appears at ``path`` until ``close()`` succeeds. Frames stream into ffmpeg,
    which encodes them into a private hidden file beside ``path``; ``close()`` then
    remuxes that (no re-encoding) through :func:`~jittor_sbvsr.utils.files.atomic_save`,
    moving the index to the front of MP4/MOV files so they play while downloading.

    ``source``: the video the frames were made from, whose ``info`` (its :func:`probe`;
    probed here when not given) says what it carries. The output keeps it: each frame's
    presentation time (frame k at the source's k-th; a variable frame rate stays
    variable), the pixel aspect ratio (stored as the stream's SAR), every audio
    stream (copied; re-encoded to AAC when the container cannot take its codec:
    learned by trying), subtitles (:func:`carry_notes` says which the container
    cannot hold), chapters, the container's metadata and the streams' languages.

    Pixels: yuv420p (BT.709, limited range, tagged), the one format every player
    plays. 4:2:0 needs even sizes, and H.264 can crop only in steps of 2 there, so
    a frame with an odd width or height is written as yuv444p: exact size over
    universal playback (x4 super-resolution output is always even). ``pix_fmt``
    forces either. ``fps`` may be a ``Fraction`` (``probe`` gives 30000/1001): the
    frame rate without a source, or with one whose times are broken.
    """

    def __init__(self, path, fps, crf=DEFAULT_CRF, source=None, preset='medium',
                 pix_fmt='auto', info=None):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in WRITE_FORMATS:
            raise UserError(f'{self.path}: cannot write H.264 video to "{ext or "no extension"}"; '
                            f'use {", ".join(sorted(WRITE_FORMATS))}')
        self.format = WRITE_FORMATS[ext]
        fps = Fraction(fps).limit_denominator(1_000_000) if fps is not None else None
        if fps is None or fps <= 0:
            raise ValueError(f'fps must be positive, got {fps}')
        if not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
            raise ValueError(f'crf must be an integer 0..51 (x264), got {crf!r}')
        if pix_fmt not in ('auto', 'yuv420p', 'yuv444p'):
            raise ValueError(f'pix_fmt must be auto, yuv420p or yuv444p, got {pix_fmt!r}')
        self.fps, self.crf, self.preset, self.pix_fmt = fps, int(crf), preset, pix_fmt
        self.source = os.fspath(source) if source is not None else None
        if info is None and self.source is not None:  # not known from a probe: look
            info = probe(self.source)
        self.info = info
        self.n_written = 0
        self.notes = []  # what close() had to leave out, one line each
        self._size = self._proc = self._log = self._tmp = self._script = None
        self._done = False

    # ------------------------------------------------------------ writing

    def _start(self, h, w):
        folder = os.path.dirname(os.path.abspath(self.path))
        ensure_dir(folder)
        try:  # named as atomic writes name theirs, so a run's remove_stale_temps knows a killed one's
            self._tmp = temp_name(self.path)
            open(self._tmp, 'xb').close()
        except OSError as e:
            raise UserError(f'{self.path}: cannot write ({e.strerror or e})') from None
        pix = self.pix_fmt
        if pix == 'auto':
            pix = 'yuv420p' if h % 2 == 0 and w % 2 == 0 else 'yuv444p'
        self._log = tempfile.TemporaryFile()
        vf, timing = [], []
        times = _times(self.info)
        if times is not None:  # the source's frame times, in its own time base
            tb, ticks = times
            vf += [f'settb={tb.numerator}/{tb.denominator}', f'setpts={_pts_expression(ticks)}']
            timing = ['-enc_time_base:v', f'{tb.numerator}/{tb.denominator}']
        sar = self.info.sar if self.info is not None else Fraction(1)
        vf += [f'scale=out_color_matrix=bt709:out_range=tv:flags={_SWS}', f'format={pix}',
               'setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv',
               f'setsar=sar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator, 1)}']
        self._script = tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False, encoding='utf-8')
        with self._script:  # a file: a long variable-rate time table is no command-line argument
            self._script.write(','.join(vf))
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error',
               '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}',
               '-framerate', str(self.fps), '-i', 'pipe:0', '-/filter:v', self._script.name,
               '-fps_mode', 'passthrough', *timing,
               '-c:v', 'libx264', '-preset', self.preset, '-crf', str(self.crf), '-threads', _x264_threads(),
               '-f', 'nut', '-y', _arg(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log, **_popen_kwargs())
        self._size = (h, w)

    def _failed(self, what='cannot encode video'):
        self._proc.wait()
        reason = info_text.reason(_tail(self._log), _arg(self._tmp))
        self.abort()
        return UserError(f'{self.path}: {what}: {reason}')

    def write(self, frame):
        """Append one uint8 HxWx3 RGB frame; every frame must have the first one's size."""
        if self._done:
            raise ValueError(f'{self.path}: writer already closed')
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'expected a uint8 HxWx3 frame, got {frame.dtype} {frame.shape}')
        if self._proc is None:
            self._start(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f'frame {self.n_written} is {frame.shape[1]}x{frame.shape[0]}, '
                             f'the video is {self._size[1]}x{self._size[0]}')
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except OSError:  # ffmpeg has quit: disk full, bad option, ...
            raise self._failed() from None
        self.n_written += 1

    def close(self):
        """Finish encoding, add the audio and move the file into place; returns the path."""
        if self._done:
            return self.path
        if self._proc is None:
            self._done = True
            raise UserError(f'{self.path}: no frames to write')
        try:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            if self._proc.wait() != 0:
                raise self._failed()
            atomic_save(self.path, self._remux)
        except BaseException:
            self.abort()
            raise
        self.abort()  # removes the intermediate file; the result is in place
        return self.path

    def _remux(self, out):
        """Intermediate video (+ what the source carries) -> ``out``, copying the streams."""
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error']
        times, part = _times(self.info), self.info.part if self.info is not None else None
        late = times[0] * times[1][0] - (part.start if part else 0) if times is not None else 0
        if late:  # the source's first frame is late: so is ours
            cmd += ['-itsoffset', f'{float(late):.6f}']
        cmd += ['-i', _arg(self._tmp)]
        plan = _carry_plan(self.info, self.format) if self.source is not None else None
        maps = ['-map', '0:v:0']
        if plan is not None:
            if part is not None:  # sound, subtitles and chapters of the part's time only
                cmd += ['-ss', f'{float(part.start):.6f}']
                cmd += ['-t', f'{float(part.end - part.start):.6f}'] if part.end is not None else []
            cmd += ['-i', _arg(self.source)]
            maps += [a for s in plan.keep for a in ('-map', f'1:{s.index}')]
            maps += ['-map_metadata', '1', '-map_chapters', '1']
            lang = next((s.language for s in self.info.streams if s.kind == 'Video' and s.language), None)
            if lang:
                maps += ['-metadata:s:v:0', f'language={lang}']
        tail = (['-movflags', '+faststart'] if self.format in ('mp4', 'mov') else []) + \
               ['-f', self.format, '-y', _arg(out)]
        subs = plan.subtitle_codecs if plan is not None else []
        aac = ['-c', 'copy', '-c:a', 'aac', '-b:a', '192k', *subs]
        # a part's sound is decoded to be cut at its first frame (a copy starts at a packet before)
        attempts = [aac] if part is not None else [['-c', 'copy', *subs]]
        if plan is not None and part is None and any(s.kind == 'Audio' for s in plan.keep):
            attempts.append(aac)
        tries = [(maps, codecs) for codecs in attempts]
        if subs:  # subtitles ffmpeg cannot convert after all: the video without them, said in .notes
            subtitles = {f'1:{t.index}' for t in plan.keep if t.kind == 'Subtitle'}
            pairs = [maps[i:i + 2] for i in range(0, len(maps), 2)]
            tries.append(([a for p in pairs if p[1] not in subtitles for a in p], attempts[-1][:-len(subs)]))
        for k, (m, codecs) in enumerate(tries):
            r = subprocess.run(cmd + m + codecs + tail, stdin=subprocess.DEVNULL, capture_output=True,
                               **_popen_kwargs())
            if r.returncode == 0:
                if k == len(attempts):
                    self.notes.append(f'{self.path}: the subtitles could not be converted for it: left out')
                return
        raise UserError(f'{self.path}: cannot write video: '
                        f'{info_text.reason(r.stderr.decode("utf-8", "replace"), _arg(out))}')

    def abort(self):
        """Stop ffmpeg and delete what was written so far; ``path`` is left untouched."""
        self._done = True
        if self._proc is not None:
            _stop(self._proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        for name in ('_tmp', '_script'):
            f = getattr(self, name, None)
            if f is not None:
                try:
                    os.unlink(f if isinstance(f, str) else f.name)
                except OSError:
                    pass
                setattr(self, name, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not getattr(self, '_done', True):
            self.abort()
