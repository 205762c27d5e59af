"""What ffmpeg says about a file, read from its text: stderr reports and ``framecrc`` lines.

The imageio-ffmpeg wheel ships ffmpeg without ffprobe, so everything
data/video.py knows about a file before decoding it comes from parsing what
ffmpeg prints: the 'Input #0' report (streams, codecs, languages, size,
sample aspect ratio, colour tags, chapters), the 'Output #1' report of a
decoded frame (the size and aspect after display rotation), and the
``framecrc`` rows of a stream copy (every packet's presentation time,
without decoding). Pure text in, values out: no process is started here.
"""
import re
from collections import namedtuple
from fractions import Fraction

__all__ = ['Stream', 'Colour', 'untag', 'reason', 'input_section', 'stream_lines', 'main_video',
           'size_of', 'rate', 'sar_of', 'colour_of', 'bit_depth', 'streams', 'has_chapters',
           'packet_times', 'TEXT_SUBTITLES']

Stream = namedtuple('Stream', 'index kind codec language')
Stream.__doc__ = """One stream of the input: ``index`` (ffmpeg's #0:index), ``kind`` ('Video', 'Audio',
'Subtitle', 'Data', 'Attachment'), ``codec`` (ffmpeg's name, e.g. 'aac', 'subrip'),
``language`` (the tag, e.g. 'eng'; None when absent or 'und')."""

Colour = namedtuple('Colour', 'pix_fmt full_range matrix')
Colour.__doc__ = """How the main video stream's pixels are coded: ``pix_fmt`` (e.g. 'yuv420p10le'),
``full_range`` (True for 0-255 'pc'/yuvj, False for 16-235 'tv' or untagged YUV) and
``matrix`` (the YUV->RGB matrix as ffmpeg's scale filter names it, 'bt709', 'bt601', ...;
untagged YUV gets bt709 from 720 rows or 1280 columns up, bt601 below, as players do;
None for RGB formats)."""

# Subtitle codecs that are text, so that mp4/mov (mov_text) and mkv (srt) can take them converted.
TEXT_SUBTITLES = ('subrip', 'srt', 'ass', 'ssa', 'webvtt', 'mov_text', 'text')

_PREFIX = re.compile(r'^\[[^\]]*@ ?0x[0-9a-fA-F]+\] ?')
_LEVEL = re.compile(r'^\[(quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ')
_OPENING = re.compile(r'^Error (?:opening|while opening) (?:input|output)(?: files?)?: (.*)')


def untag(stderr):
    """ffmpeg's stderr (run with ``-loglevel level+...``) as (level, text) lines."""
    out = []
    for line in stderr.splitlines():
        line = _PREFIX.sub('', line)
        m = _LEVEL.match(line)
        out.append((m.group(1), line[m.end():]) if m else (None, line))
    return out


def reason(stderr, arg=None):
    """The gist of ffmpeg's errors on one short line, e.g. 'Invalid data found when
    processing input (moov atom not found)'; the file itself is named by the caller."""
    main, details = [], []
    for level, line in untag(stderr):
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


def input_section(stderr):
    """Lines of ffmpeg's 'Input #0' report (before the stream mapping / outputs)."""
    lines = [line for _, line in untag(stderr)]
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


def stream_lines(lines, kind):
    return [line for line in lines if line.lstrip().startswith('Stream #') and f': {kind}: ' in line]


def main_video(lines):
    """The first video stream that is not cover art (what ``-map 0:V:0`` picks)."""
    for line in stream_lines(lines, 'Video'):
        if '(attached pic)' not in line:
            return line
    return None


_SIZE = re.compile(r'[ ,](\d{1,6})x(\d{1,6})[ ,\[]')


def size_of(line):
    m = _SIZE.search(line + ' ')
    return (int(m.group(2)), int(m.group(1))) if m else None


def rate(line):
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


_SAR = re.compile(r'\[SAR (\d+):(\d+) DAR \d+:\d+\]')


def sar_of(line):
    """The stream's sample (pixel) aspect ratio; 1 when it states none (or 0:1, 'unknown')."""
    m = _SAR.search(line)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        return Fraction(1)
    return Fraction(int(m.group(1)), int(m.group(2)))


def _fields(line):
    """``line`` split at the commas that are outside parentheses."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(line):
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
        elif c == ',' and depth == 0:
            out.append(line[start:i].strip())
            start = i + 1
    out.append(line[start:].strip())
    return out


_MATRIX = {'bt709': 'bt709', 'bt470bg': 'bt601', 'smpte170m': 'bt601', 'fcc': 'fcc',
           'smpte240m': 'smpte240m', 'bt2020nc': 'bt2020', 'bt2020c': 'bt2020'}


def colour_of(line, size):
    """:class:`Colour` of a video stream line, e.g. ``yuvj420p(pc, bt470bg/bt470bg/smpte170m,
    progressive)``; ``size`` (h, w) chooses the matrix of untagged YUV."""
    fields = _fields(line.split(': Video: ', 1)[-1])
    m = re.match(r'^([a-z0-9_]+)(?:\((.*)\))?$', fields[1]) if len(fields) > 1 else None
    if m is None:
        return Colour(None, False, None)
    pix, tags = m.group(1), [t.strip() for t in _fields(m.group(2) or '')]
    space = None
    for t in tags:
        if t in ('tv', 'pc') or t.startswith(('progressive', 'top', 'bottom')) or not t:
            continue
        space = t.split('/')[0]
    full = pix.startswith('yuvj') or 'pc' in tags
    if not pix.startswith(('yuv', 'nv', 'p0', 'p2', 'p4', 'y2', 'uyv', 'yuyv', 'yvyu', 'ayuv', 'v')):
        return Colour(pix, full, None)  # RGB, grey, palette: no matrix
    matrix = _MATRIX.get(space)
    if matrix is None:
        h, w = size
        matrix = 'bt709' if h >= 720 or w >= 1280 else 'bt601'
    return Colour(pix, full, matrix)


def bit_depth(pix_fmt):
    """Bits per component of an ffmpeg pixel format name (yuv420p10le -> 10; 8 when it names none)."""
    m = re.search(r'p(9|10|12|14|16)(le|be)?$', pix_fmt or '') or re.search(r'(10|12|16)(le|be)$', pix_fmt or '')
    return int(m.group(1)) if m else 8


_STREAM = re.compile(r'^\s*Stream #\d+:(\d+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: (\w+): ([\w-]+)')


def streams(section):
    """Every stream of the 'Input #0' report, as :class:`Stream` in file order."""
    out = []
    for line in section:
        m = _STREAM.match(line)
        if m:
            lang = m.group(2)
            out.append(Stream(int(m.group(1)), m.group(3), m.group(4),
                              lang if lang and lang != 'und' else None))
    return out


def has_chapters(section):
    return any(line.strip() == 'Chapters:' for line in section)


_NOPTS = -(2 ** 63)


def packet_times(framecrc):
    """(time base, presentation times in its ticks, sorted) of stream 0 of ffmpeg's ``framecrc``
    output; the times are None when a packet has none or two packets share one (broken stamps)."""
    tb, pts = None, []
    for line in framecrc.splitlines():
        if line.startswith('#tb 0:'):
            num, den = line.split(':', 1)[1].strip().split('/')
            tb = Fraction(int(num), int(den))
        elif line and not line.startswith('#'):
            cols = line.split(',')
            if len(cols) >= 3 and cols[0].strip() == '0':
                pts.append(int(cols[2]))
    pts.sort()
    if tb is None or not pts or pts[0] == _NOPTS or any(b <= a for a, b in zip(pts, pts[1:])):
        return tb, len(pts), None
    return tb, len(pts), pts
