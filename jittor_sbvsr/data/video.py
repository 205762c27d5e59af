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

__all__ = ['VIDEO_EXTENSIONS', 'WRITE_FORMATS', 'DEFAULT_CRF', 'VideoInfo', 'is_video_file',
           'ffmpeg_exe', 'probe', 'VideoReader', 'VideoWriter']

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

VideoInfo = namedtuple('VideoInfo', 'n_frames size fps has_audio')
VideoInfo.__doc__ = """What :func:`probe` found: ``n_frames`` (int), ``size`` ((h, w) of the
decoded, upright frames), ``fps`` (``Fraction``, e.g. 30000/1001; None if the file states
none), ``has_audio`` (bool)."""


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


_PREFIX = re.compile(r'^\[[^\]]*@ ?0x[0-9a-fA-F]+\] ?')
_LEVEL = re.compile(r'^\[(quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ')
_OPENING = re.compile(r'^Error (?:opening|while opening) (?:input|output)(?: files?)?: (.*)')


def _untag(stderr):
    """ffmpeg's stderr (run with ``-loglevel level+...``) as (level, text) lines."""
    out = []
    for line in stderr.splitlines():
        line = _PREFIX.sub('', line)
        m = _LEVEL.match(line)
        out.append((m.group(1), line[m.end():]) if m else (None, line))
    return out


def _reason(stderr, arg=None):
    """The gist of ffmpeg's errors on one short line, e.g. 'Invalid data found when
    processing input (moov atom not found)'; the file itself is named by the caller."""
    main, details = [], []
    for level, line in _untag(stderr):
        if level not in (None, 'panic', 'fatal', 'error'):
            continue
        line = line.strip()
        if arg:
            line = line.replace(arg, 'the file')
        if not line or line.startswith(('Error opening input file', 'Error opening output file',
                                        'Conversion failed', 'Exiting normally')):
            continue
        m = _OPENING.match(line)
        text = m.group(1) if m else line
        if text not in main and text not in details:
            (main if m else details).append(text)
    if main:
        text = main[0] + (f' ({"; ".join(details[:2])})' if details else '')
    else:
        text = '; '.join(details[:2]) or 'ffmpeg failed without a message'
    return text if len(text) <= 200 else text[:197] + '...'


def _check_readable(path):
    """A missing, unreadable or folder path gives the project's usual one-line error."""
    try:
        with open(path, 'rb'):
            pass
    except OSError as e:
        raise read_error(path, e, expected='a video file') from None


def _input_section(stderr):
    """Lines of ffmpeg's 'Input #0' report (before the stream mapping / outputs)."""
    lines = [line for _, line in _untag(stderr)]
    out, inside = [], False
    for line in lines:
        if line.startswith('Input #0'):
            inside = True
        elif inside and (line.startswith(('Stream mapping:', 'Output #', 'Input #1'))
                         or not line.startswith(' ')):
            break
        if inside:
            out.append(line)
    return out


def _stream_lines(lines, kind):
    return [line for line in lines if line.lstrip().startswith('Stream #') and f': {kind}: ' in line]


def _main_video(lines):
    """The first video stream that is not cover art (what ``-map 0:V:0`` picks)."""
    for line in _stream_lines(lines, 'Video'):
        if '(attached pic)' not in line:
            return line
    return None


_SIZE = re.compile(r'[ ,](\d{1,6})x(\d{1,6})[ ,\[]')


def _size_of(line):
    m = _SIZE.search(line + ' ')
    return (int(m.group(2)), int(m.group(1))) if m else None


def _rate(line):
    """The stream's frame rate: ffmpeg prints the average ('fps') to 2 decimals, so
    29.97 is snapped to 30000/1001 (and 23.98, 59.94, ... likewise); else 'tbr'."""
    for unit in ('fps', 'tbr'):
        m = re.search(r'[ ,](\d+(?:\.\d+)?)(k?) ' + unit + r'\b', line)
        if m:
            x = Fraction(m.group(1)) * (1000 if m.group(2) else 1)
            if x <= 0:
                continue
            if x.denominator != 1:
                k = round(x * Fraction(1001, 1000))
                ntsc = Fraction(k * 1000, 1001)
                if k > 0 and abs(ntsc - x) < Fraction(6, 1000):
                    return ntsc
            return x
    return None


def _probe_run(path):
    """ffmpeg in one pass: the input report (stderr), the packet count of the video
    stream copied to nothing (``-progress`` on stdout), and one decoded frame whose
    output report gives the size after ffmpeg's auto-rotation of phone clips."""
    path = os.fspath(path)
    _check_readable(path)
    arg = _arg(path)
    cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+info', '-i', arg,
           '-map', '0:V:0?', '-c', 'copy', '-f', 'null', '-',
           '-map', '0:V:0?', '-frames:v', '1', '-pix_fmt', 'rgb24', '-f', 'null', '-',
           '-progress', 'pipe:1']
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, **_popen_kwargs())
    except OSError as e:
        raise UserError(f'cannot run ffmpeg ({e.strerror or e}): run env/setup.sh') from None
    err = r.stderr.decode('utf-8', 'replace')
    section = _input_section(err)
    if section and _main_video(section) is None:
        raise UserError(f'{path}: no video stream')
    if r.returncode != 0 or not section:
        raise UserError(f'{path}: cannot decode video: {_reason(err, arg)}')
    return section, err, r.stdout.decode('utf-8', 'replace')


def probe(path):
    """``VideoInfo(n_frames, (h, w), fps, has_audio)`` of a video file, without decoding it.

    The count is that of the video stream's packets (a stream copy to nothing: it
    reads the file but decodes nothing), since ffmpeg does not report the count
    that some containers store; it is exact for intact files and is what
    :class:`VideoReader` yields (which checks it). The size is that of the frames
    the reader gives: upright, after the rotation phones store as metadata.
    """
    path = os.fspath(path)
    section, err, progress = _probe_run(path)
    video = _main_video(section)
    counts = re.findall(r'^frame=(\d+)', progress, re.M)
    n = int(counts[-1]) if counts else 0
    if n == 0:
        raise UserError(f'{path}: the video stream has no frames')
    lines = [line for _, line in _untag(err)]
    out1 = [i for i, line in enumerate(lines) if line.startswith('Output #1')]
    decoded = _main_video(lines[out1[0]:]) if out1 else None
    size = _size_of(decoded) if decoded else None
    if size is None:
        size = _size_of(video)
    if size is None:
        raise UserError(f'{path}: cannot decode video: no frame size in the stream')
    return VideoInfo(n, size, _rate(video), bool(_stream_lines(section, 'Audio')))


def _has_audio(path):
    """Whether ``path`` has an audio stream (reads the header only)."""
    path = os.fspath(path)
    _check_readable(path)
    cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-loglevel', 'level+info', '-i', _arg(path)]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, **_popen_kwargs())
    section = _input_section(r.stderr.decode('utf-8', 'replace'))
    if not section:  # no output file given: ffmpeg always fails here, but reports the input
        raise UserError(f'{path}: cannot read audio: '
                        f'{_reason(r.stderr.decode("utf-8", "replace"), _arg(path))}')
    return bool(_stream_lines(section, 'Audio'))


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
        self.n_frames, self.size, self.fps, self.has_audio = self.info
        self._procs = set()

    def __len__(self):
        return self.n_frames

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
        vf = ([f'select=gte(n\\,{start})'] if start else []) + \
             [f'scale={w}:{h}:flags={_SWS}', 'format=rgb24']
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error',
               '-i', arg, '-map', '0:V:0', '-vf', ','.join(vf), '-fps_mode', 'passthrough',
               '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1']
        return self._run(cmd, arg, start, stop, h, w)

    def _run(self, cmd, arg, start, stop, h, w):
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log, **_popen_kwargs())
            self._procs.add(proc)
            try:
                for index in range(start, stop):
                    frame = np.empty((h, w, 3), np.uint8)
                    buf, got = memoryview(frame).cast('B'), 0
                    while got < buf.nbytes:
                        n = proc.stdout.readinto(buf[got:])
                        if not n:
                            break
                        got += n
                    if got < buf.nbytes:
                        proc.wait()
                        if proc.returncode:
                            raise UserError(f'{self.path}: cannot decode video: {_reason(_tail(log), arg)}')
                        raise UserError(f'{self.path}: the video ends after {index} of its '
                                        f'{self.n_frames} frames (a damaged file?)')
                    yield frame
                if stop == self.n_frames and proc.stdout.read(1):
                    raise UserError(f'{self.path}: the video decodes to more than the '
                                    f'{self.n_frames} frames its stream holds (a damaged file?)')
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


def _x264_threads():
    """x264's own thread count (1.5 per core) from the machine's cores, not this process's.

    x264's output depends on its thread count, and left to itself it counts
    the cores this process may use: fewer under ``mpirun``, which binds each
    rank to its cores. Fixed here, the same frames give the same file.
    """
    return str(max(1, (os.cpu_count() or 1) * 3 // 2))


class VideoWriter:
    """Encode uint8 HxWx3 RGB frames, given one at a time, into an H.264 file.

    ``VideoWriter(path, fps, crf=DEFAULT_CRF, audio_from=None, preset='medium')``;
    ``write(frame)`` for each frame, then ``close()``, or use it in a ``with`` block,
    which closes on success and discards everything on an exception (Ctrl-C included).

    Nothing appears at ``path`` until ``close()`` succeeds. Frames stream into ffmpeg,
    which encodes them into a private hidden file beside ``path``; ``close()`` then
    remuxes that (no re-encoding) through :func:`~jittor_sbvsr.utils.files.atomic_save`,
    adding every audio stream of ``audio_from`` (copied; re-encoded to AAC when the
    container cannot take its codec: learned by trying, not from a table), and moving
    the index to the front of MP4/MOV files so they play while downloading.

    Pixels: yuv420p (BT.709, limited range, tagged), the one format every player
    plays. 4:2:0 needs even sizes, and H.264 can crop only in steps of 2 there, so
    a frame with an odd width or height is written as yuv444p: exact size over
    universal playback (x4 super-resolution output is always even). ``pix_fmt``
    forces either. ``fps`` may be a ``Fraction`` (``probe`` gives 30000/1001). ``has_audio``:
    whether ``audio_from`` has audio, when a :func:`probe` already said so.
    """

    def __init__(self, path, fps, crf=DEFAULT_CRF, audio_from=None, preset='medium',
                 pix_fmt='auto', has_audio=None):
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
        self.audio_from = os.fspath(audio_from) if audio_from is not None else None
        if has_audio is None and self.audio_from is not None:  # not known from a probe: look
            has_audio = _has_audio(self.audio_from)
        self._audio = self.audio_from is not None and bool(has_audio)
        self.n_written = 0
        self._size = self._proc = self._log = self._tmp = None
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
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error',
               '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}',
               '-framerate', str(self.fps), '-i', 'pipe:0',
               '-vf', f'scale=out_color_matrix=bt709:out_range=tv:flags={_SWS},format={pix},'
                      'setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv',
               '-c:v', 'libx264', '-preset', self.preset, '-crf', str(self.crf), '-threads', _x264_threads(),
               '-f', self.format, '-y', _arg(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log, **_popen_kwargs())
        self._size = (h, w)

    def _failed(self, what='cannot encode video'):
        self._proc.wait()
        reason = _reason(_tail(self._log), _arg(self._tmp))
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
        """Intermediate video (+ the source's audio) -> ``out``, copying the streams."""
        cmd = [ffmpeg_exe(), '-hide_banner', '-nostdin', '-nostats', '-loglevel', 'level+error',
               '-i', _arg(self._tmp)]
        if self._audio:
            cmd += ['-i', _arg(self.audio_from), '-map', '0:v:0', '-map', '1:a?']
        else:
            cmd += ['-map', '0:v:0']
        tail = (['-movflags', '+faststart'] if self.format in ('mp4', 'mov') else []) + \
               ['-f', self.format, '-y', _arg(out)]
        attempts = [['-c', 'copy']]
        if self._audio:
            attempts.append(['-c:v', 'copy', '-c:a', 'aac', '-b:a', '192k'])
        for codecs in attempts:
            r = subprocess.run(cmd + codecs + tail, stdin=subprocess.DEVNULL, capture_output=True,
                               **_popen_kwargs())
            if r.returncode == 0:
                return
        raise UserError(f'{self.path}: cannot write video: '
                        f'{_reason(r.stderr.decode("utf-8", "replace"), _arg(out))}')

    def abort(self):
        """Stop ffmpeg and delete what was written so far; ``path`` is left untouched."""
        self._done = True
        if self._proc is not None:
            _stop(self._proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

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
