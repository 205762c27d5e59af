"""What real camera and phone files carry survives data/video.py: pixel aspect, display rotation,
variable frame times with audio in sync, full-range / BT.601 / 10-bit colour, several audio
tracks with languages, subtitles, chapters, metadata; and broken frame times fall back as stated.

Each clip is made here with the bundled ffmpeg (tiny frames, few of them); the "model" is a
plain 2x pixel repeat, so the output's colours can be compared with the input's.
"""
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from test_video import ffmpeg, psnr, write

from jittor_sbvsr.data import ffmpeg_info
from jittor_sbvsr.data.video import VideoReader, carry_notes, ffmpeg_exe, probe


def up2(frames):
    """The stand-in model: every pixel repeated 2x2 (colours unchanged)."""
    return [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in frames]


def restore(src, out):
    """``src`` through the stand-in model into ``out``, keeping what ``src`` carries."""
    info = probe(src)
    return write(out, up2(VideoReader(src, info)), fps=info.fps or 25, source=src, info=info)


def times(path):
    """Presentation times (seconds, Fractions) of the main video stream's frames."""
    info = probe(path)
    return [info.time_base * t for t in info.pts]


def audio_span(path, stream=0):
    """(start, end) in seconds of audio stream ``stream``, from its packets (nothing decoded)."""
    r = subprocess.run([ffmpeg_exe(), '-hide_banner', '-nostdin', '-v', 'error', '-i', f'file:{path}',
                        '-map', f'0:a:{stream}', '-c', 'copy', '-f', 'framecrc', 'pipe:1'],
                       capture_output=True, text=True, encoding='utf-8', check=True)
    tb = next(Fraction(line.split(':', 1)[1].strip()) for line in r.stdout.splitlines() if line.startswith('#tb 0:'))
    rows = [[int(c) for c in line.split(',')[1:4]] for line in r.stdout.splitlines()
            if line and not line.startswith('#')]
    return tb * min(p for _, p, _ in rows), tb * max(p + d for _, p, d in rows)


def raw_clip(path, frames, pix_in, *encode):
    """Encode ``frames`` (uint8 rgb24 or uint16 rgb48le arrays) with the encoder options given."""
    raw = path.with_suffix('.raw')
    raw.write_bytes(b''.join(np.ascontiguousarray(f).tobytes() for f in frames))
    h, w = frames[0].shape[:2]
    ffmpeg('-f', 'rawvideo', '-pix_fmt', pix_in, '-s', f'{w}x{h}', '-framerate', 10, '-i', raw,
           *encode, '-c:v', 'libx264', '-qp', 0, path)
    return path


def patches():
    """Flat 16x16 patches of colours near black, white and saturated primaries (where range and
    matrix errors are largest), 4 frames."""
    colours = [(6, 6, 6), (250, 250, 250), (220, 30, 40), (30, 200, 60), (40, 50, 230), (128, 100, 60)]
    f = np.zeros((16, 16 * len(colours), 3), np.uint8)
    for i, c in enumerate(colours):
        f[:, 16 * i:16 * (i + 1)] = c
    return [f] * 4, colours


def patch_colours(frame, n, scale=1):
    """Mean colour of the centre of each patch (chroma edges excluded)."""
    s = 16 * scale
    return np.array([frame[s // 4:3 * s // 4, s * i + s // 4:s * i + 3 * s // 4].reshape(-1, 3).mean(0)
                     for i in range(n)])


def test_non_square_pixels_kept(tmp_path):
    src = tmp_path / 'dv.mp4'
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=44x36:rate=25', '-frames:v', 6,
           '-vf', 'setsar=sar=128/117:max=1000', '-c:v', 'libx264', src)
    assert probe(src).sar == Fraction(128, 117)
    out = restore(src, tmp_path / 'out.mp4')
    info = probe(out)
    assert info.size == (72, 88) and info.sar == Fraction(128, 117)  # same display aspect, 2x sharper


def test_rotated_clip_is_upright_with_its_aspect(tmp_path):
    src = tmp_path / 'dv.mp4'
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=44x36:rate=25', '-frames:v', 6,
           '-vf', 'setsar=sar=128/117:max=1000', '-c:v', 'libx264', src)
    rot = tmp_path / 'phone.mp4'
    ffmpeg('-display_rotation', 90, '-i', src, '-c', 'copy', rot)
    info = probe(rot)
    assert info.size == (44, 36) and info.sar == Fraction(117, 128)  # pixels turned with the picture
    out = restore(rot, tmp_path / 'out.mp4')
    got = probe(out)
    # upright frames, no rotation left in the file (else the size would turn again), aspect kept
    assert got.size == (88, 72) and got.sar == Fraction(117, 128)
    turned = [f[::2, ::2] for f in VideoReader(out)]
    assert psnr(turned, list(VideoReader(rot))) > 30  # measured 35.4 dB; turned the wrong way: 10.5


def vfr_clip(path, delay):
    """5 frames 0.1 s apart, then 7 frames 0.04 s apart (a phone's rate change), the video
    starting ``delay`` s after a 0.9 s sine (AAC), as mp4."""
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=32x24:rate=10', '-f', 'lavfi', '-i', 'sine=f=440:d=0.9',
           '-frames:v', 12, '-vf', f'settb=1/1000,setpts=if(lt(N\\,5)\\,N*100\\,500+(N-5)*40)+{int(delay * 1000)}',
           '-fps_mode', 'passthrough', '-enc_time_base:v', '1/1000', '-c:v', 'libx264', '-c:a', 'aac', path)
    return path


def test_variable_frame_rate_and_audio_stay_in_sync(tmp_path):
    src = vfr_clip(tmp_path / 'phone vfr.mp4', delay=0.12)
    want = times(src)
    steps = {b - a for a, b in zip(want, want[1:])}
    assert steps == {Fraction(1, 10), Fraction(1, 25)}  # the clip is variable-rate
    out = restore(src, tmp_path / 'out.mp4')
    assert times(out) == want
    # the sound starts, ends and lies against the picture as in the source
    a_src, a_out = audio_span(src), audio_span(out)
    assert a_out == a_src
    assert want[0] == Fraction(12, 100) and times(out)[0] - a_out[0] == want[0] - a_src[0]


def test_broken_frame_times_fall_back_to_even_spacing(tmp_path):
    # the encoder's 1/10 s clock rounds 0.04 s steps onto one another: repeated times
    src = tmp_path / 'broken.mp4'
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=32x24:rate=10', '-frames:v', 12,
           '-vf', 'setpts=if(lt(N\\,5)\\,N/10/TB\\,(0.5+(N-5)/25)/TB)', '-fps_mode', 'passthrough',
           '-c:v', 'libx264', src)
    info = probe(src)
    assert info.pts is None and info.n_frames == 12
    (note,) = carry_notes(src, info, 'out.mp4')
    assert note.startswith(f'{src}: its frame times are broken') and 'evenly at' in note
    out = restore(src, tmp_path / 'out.mp4')
    got = times(out)
    assert len(got) == 12 and {b - a for a, b in zip(got, got[1:])} == {1 / info.fps}


@pytest.mark.parametrize('case', ['full range', 'bt601 tagged', 'bt601 untagged SD', 'bt709 tagged'])
def test_colours_survive_decode_and_encode(case, tmp_path):
    frames, colours = patches()
    matrix, rng = {'full range': ('bt601', 'pc'), 'bt709 tagged': ('bt709', 'tv')}.get(case, ('bt601', 'tv'))
    tags = [] if case == 'bt601 untagged SD' else \
        ['-colorspace', {'bt601': 'smpte170m', 'bt709': 'bt709'}[matrix], '-color_range', rng]
    src = raw_clip(tmp_path / 'src.mp4', frames, 'rgb24',
                   '-vf', f'scale=out_color_matrix={matrix}:out_range={rng}:flags=accurate_rnd+full_chroma_int',
                   '-pix_fmt', 'yuvj444p' if rng == 'pc' else 'yuv444p', *tags)
    colour = probe(src).colour
    assert (colour.full_range, colour.matrix) == (rng == 'pc', matrix)
    got = patch_colours(next(iter(VideoReader(src))), len(colours))
    assert np.abs(got - np.array(colours)).max() <= 2.5, got  # decoded with the file's range and matrix
    out = restore(src, tmp_path / 'out.mp4')
    assert probe(out).colour == ffmpeg_info.Colour('yuv420p', False, 'bt709')  # tagged as written
    back = patch_colours(next(iter(VideoReader(out))), len(colours), scale=2)
    assert np.abs(back - np.array(colours)).max() <= 3, back


def test_ten_bit_is_rounded_not_banded(tmp_path):
    """A 10-bit gradient decoded at 16 bits and rounded once: the 8-bit frame is the nearest value
    everywhere (no truncation bias, no steps from an 8-bit detour, no dither)."""
    ramp = np.linspace(0, 65535, 256)
    frame = np.repeat(np.repeat(ramp[None, :, None], 16, axis=0), 3, axis=2).astype(np.uint16)
    src = raw_clip(tmp_path / 'ten.mp4', [frame] * 2, 'rgb48le', '-pix_fmt', 'yuv444p10le')
    assert ffmpeg_info.bit_depth(probe(src).colour.pix_fmt) == 10
    got = next(iter(VideoReader(src))).astype(float)
    want = ramp * 255 / 65535
    err = got - want[None, :, None]
    # 10 bits hold the ramp to +-0.125 of an 8-bit step; rounding adds at most 0.5
    assert np.abs(err).max() <= 0.5 + 0.125 + 1e-6
    assert abs(err.mean()) < 0.05  # truncating (an off-by-half conversion) gives -0.5


MKV_META = """;FFMETADATA1
title=Holiday, day 2
[CHAPTER]
TIMEBASE=1/1000
START=0
END=200
title=Arrival
[CHAPTER]
TIMEBASE=1/1000
START=200
END=400
title=Beach
"""


@pytest.fixture
def mkv(tmp_path):
    """Two audio tracks (eng, fra), an SRT subtitle (deu), two chapters, a title, a font."""
    (tmp_path / 's.srt').write_text('1\n00:00:00,000 --> 00:00:00,300\nHallo\n', encoding='utf-8')
    (tmp_path / 'meta.txt').write_text(MKV_META, encoding='utf-8')
    (tmp_path / 'font.ttf').write_bytes(b'\0\1\0\0not really a font')
    path = tmp_path / 'film.mkv'
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=32x24:rate=25:d=0.4', '-f', 'lavfi', '-i', 'sine=f=440:d=0.4',
           '-f', 'lavfi', '-i', 'sine=f=660:d=0.4', '-i', tmp_path / 's.srt', '-i', tmp_path / 'meta.txt',
           '-attach', tmp_path / 'font.ttf', '-metadata:s:t', 'mimetype=application/x-truetype-font',
           '-map', 0, '-map', 1, '-map', 2, '-map', 3, '-map_metadata', 4, '-map_chapters', 4,
           '-metadata:s:a:0', 'language=eng', '-metadata:s:a:1', 'language=fra',
           '-metadata:s:s:0', 'language=deu', '-c:v', 'libx264', '-c:a', 'aac', '-c:s', 'srt', path)
    return path


def title_and_chapters(path):
    r = subprocess.run([ffmpeg_exe(), '-hide_banner', '-nostdin', '-i', f'file:{path}'],
                       capture_output=True, text=True, encoding='utf-8')
    return ('Holiday, day 2' in r.stderr, r.stderr.count('Chapter #'), 'Beach' in r.stderr)


@pytest.mark.parametrize('ext', ['.mp4', '.mkv'])
def test_tracks_subtitles_chapters_kept(mkv, ext, tmp_path):
    info = probe(mkv)
    kinds = [(s.kind, s.language) for s in info.streams]
    assert kinds == [('Video', None), ('Audio', 'eng'), ('Audio', 'fra'), ('Subtitle', 'deu'), ('Attachment', None)]
    notes = carry_notes(mkv, info, 'x' + ext)
    # mp4 takes no attachment: one line says so (and the run goes on); mkv takes everything
    assert notes == ([f'{mkv}: attachment stream #4 (ttf) cannot go into the .mp4 output: left out']
                     if ext == '.mp4' else [])
    out = restore(mkv, tmp_path / ('out' + ext))
    got = probe(out)
    streams = [(s.kind, s.codec, s.language) for s in got.streams if s.kind != 'Data']
    sub = 'mov_text' if ext == '.mp4' else 'subrip'
    want = [('Video', 'h264', None), ('Audio', 'aac', 'eng'), ('Audio', 'aac', 'fra'), ('Subtitle', sub, 'deu')]
    assert streams[:4] == want and got.chapters
    assert title_and_chapters(out) == (True, 2, True)
    # the same sound to mkv's clock tick (mkv counts packets in whole ms, mp4 in samples)
    assert np.abs(np.array(audio_span(out, 1), float) - np.array(audio_span(mkv, 1), float)).max() <= 1e-3


def test_colour_tags_read_from_ffmpeg_text():
    """ffmpeg's stream lines as it prints them; untagged YUV takes the matrix players take."""
    c = ffmpeg_info.colour_of
    line = 'Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), {}, {} [SAR 1:1 DAR 16:9], 25 fps'
    assert c(line.format('yuv420p(progressive)', '1280x720'), (720, 1280)) == ('yuv420p', False, 'bt709')
    assert c(line.format('yuv420p(progressive)', '720x576'), (576, 720)) == ('yuv420p', False, 'bt601')
    assert c(line.format('yuvj420p(pc, bt470bg/bt470bg/smpte170m, progressive)', '640x480'),
             (480, 640)) == ('yuvj420p', True, 'bt601')
    assert c(line.format('yuv420p10le(tv, bt2020nc/bt2020/smpte2084, top coded first (swapped))', '3840x2160'),
             (2160, 3840)) == ('yuv420p10le', False, 'bt2020')
    assert c(line.format('yuv422p(pc, bt709)', '64x48'), (48, 64)) == ('yuv422p', True, 'bt709')
    assert c(line.format('rgb24', '64x48'), (48, 64)) == ('rgb24', False, None)
    assert [ffmpeg_info.bit_depth(p) for p in ('yuv420p', 'yuv420p10le', 'yuv444p12be', 'p010le', 'gbrp16le')] \
        == [8, 10, 12, 10, 16]


def test_an_outputs_chapter_track_is_no_lost_stream(mkv, tmp_path):
    """An mp4 with chapters has a text track for them; run again, it is carried by the chapters."""
    first = restore(mkv, tmp_path / 'once.mp4')
    assert any(s.kind == 'Data' for s in probe(first).streams)
    assert carry_notes(first, probe(first), 'twice.mp4') == []


def test_positions_parse():
    from jittor_sbvsr.data.video import parse_position
    assert parse_position('120f') == ('frames', 120)
    assert parse_position('90') == ('seconds', 90) and parse_position('90.5') == ('seconds', Fraction(181, 2))
    assert parse_position('1:30') == ('seconds', 90) and parse_position('00:01:30.25') == ('seconds', Fraction(361, 4))
    assert parse_position('1:00:00') == ('seconds', 3600)
    for bad in ('', 'abc', '-5', '1:2:3:4', 'f', '5 s'):
        with pytest.raises(ValueError):
            parse_position(bad)


def test_a_part_keeps_its_times_and_its_own_sound(tmp_path):
    from jittor_sbvsr.data.video import frame_range, part_of
    from jittor_sbvsr.errors import UserError
    src = vfr_clip(tmp_path / 'phone.mp4', delay=0.12)
    info = probe(src)
    want = times(src)
    # 0.5 s after the first frame is frame 5; 0.1 s from there holds frames 5, 6, 7 (0.04 s apart)
    assert frame_range(src, info, ('seconds', Fraction(1, 2)), ('seconds', Fraction(1, 10))) == (5, 8)
    assert frame_range(src, info, ('frames', 3), ('frames', 100)) == (3, 12)
    part = part_of(info, 5, 8)
    assert part.n_frames == 3 and part.part.start == want[5] and part.part.end == want[8]
    whole = list(VideoReader(src, info))
    got = list(VideoReader(src, part))
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, whole[5:8]))
    out = write(tmp_path / 'part.mp4', up2(got), fps=info.fps, source=src, info=part)
    assert times(out) == [t - want[5] for t in want[5:8]]
    a0, a1 = audio_span(out)
    # the sound of the same 0.12 s (AAC cuts in whole frames of 1024 samples: 23 ms)
    assert abs(a0) <= Fraction(1024, 44100) and abs(a1 - a0 - Fraction(12, 100)) <= Fraction(2048, 44100)
    for start, duration, msg in ((('seconds', 5), None, 'past the video\'s end'),
                                 (('frames', 12), None, 'past the video\'s end'),
                                 (None, ('seconds', Fraction(1, 1000)), None)):
        if msg is None:  # a duration shorter than a frame still holds the frame it starts on
            assert frame_range(src, info, start, duration) == (0, 1)
            continue
        with pytest.raises(UserError, match=msg) as e:
            frame_range(src, info, start, duration)
        assert str(e.value).startswith(f'{src}: --start')


def test_a_part_of_an_mkv_keeps_its_subtitle_and_chapters(mkv, tmp_path):
    from jittor_sbvsr.data.video import part_of
    info = probe(mkv)
    part = part_of(info, 5, 10)  # 0.2 s .. the end: the second chapter, past the subtitle's 0.3 s end
    out = restore_part = write(tmp_path / 'part.mkv', up2(VideoReader(mkv, part)), fps=info.fps, source=mkv, info=part)
    got = probe(restore_part)
    assert got.n_frames == 5 and [s.kind for s in got.streams][:4] == ['Video', 'Audio', 'Audio', 'Subtitle']
    assert title_and_chapters(out)[0]


def test_subtitles_that_cannot_be_converted_are_left_out_not_fatal(mkv, tmp_path, monkeypatch):
    from jittor_sbvsr.data import video
    real = video._carry_plan

    def failing(info, fmt):  # as if ffmpeg could not convert the subtitle after all
        plan = real(info, fmt)
        return plan._replace(subtitle_codecs=['-c:s:0', 'no_such_encoder'])
    monkeypatch.setattr(video, '_carry_plan', failing)
    info = probe(mkv)
    with video.VideoWriter(tmp_path / 'out.mp4', info.fps, source=mkv, info=info) as w:
        for f in up2(VideoReader(mkv, info)):
            w.write(f)
    assert w.notes == [f'{tmp_path / "out.mp4"}: the subtitles could not be converted for it: left out']
    kinds = [(s.kind, s.language) for s in probe(tmp_path / 'out.mp4').streams if s.kind != 'Data']
    assert kinds == [('Video', None), ('Audio', 'eng'), ('Audio', 'fra')]
    # a run's outputs hand the note on, for its log (infer/outputs.py, host.py, run.py)
    from PIL import Image
    from jittor_sbvsr.infer.outputs import OutputSpec, VideoFile, VideoOutputs
    feed = []
    for k, f in enumerate(VideoReader(tmp_path / 'out.mp4')):
        feed.append(str(tmp_path / f'{k}.png'))
        Image.fromarray(f).save(feed[-1])
    run_mp4 = str(tmp_path / 'run.mp4')
    spec = OutputSpec(name='run', out_dir=str(tmp_path), lr=str(mkv), lr_hw=info.size, scale=2, gt=None,
                      gt_info=None, gt_first=0, score=False, save_image=True, save_kernel=False,
                      video=VideoFile(run_mp4, info.fps, 18, str(mkv), info), keep_parts=True, feed=feed,
                      record=None)
    assert VideoOutputs(spec).close() == [f'{run_mp4}: the subtitles could not be converted for it: left out']
