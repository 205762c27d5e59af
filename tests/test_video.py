"""Video files in and out (jittor_sbvsr/data/video.py) on small synthetic clips made with the
bundled ffmpeg: 32x48 frames, a dozen of them, a sine for audio."""
import inspect
import os
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from conftest import run_child

from jittor_sbvsr.data.video import (DEFAULT_CRF, VideoReader, VideoWriter, ffmpeg_exe,
                                     is_video_file, probe)
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.utils.files import is_temp_name

H, W, N, FPS = 32, 48, 12, 25


def ffmpeg(*args):
    run_child([ffmpeg_exe(), '-hide_banner', '-v', 'error', '-nostdin', '-y', *map(str, args)],
              check=True)


def make_clip(path, n=N, audio=True, size=f'{W}x{H}', rate=FPS):
    """A moving test pattern (H.264), with a 440 Hz sine (AAC) as long as the video if ``audio``."""
    video = ['-f', 'lavfi', '-i', f'testsrc2=size={size}:rate={rate}']
    sound = ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100', '-c:a', 'aac',
             '-t', float(n / Fraction(rate))] if audio else []
    ffmpeg(*video, *sound, '-frames:v', n, '-c:v', 'libx264', '-pix_fmt', 'yuv420p', path)
    return path


def psnr(got, want):
    mse = np.mean([(a.astype(np.float64) - b) ** 2 for a, b in zip(got, want)])
    return 10 * np.log10(255.0 ** 2 / mse)


def upscale2(frames):
    """2x bicubic: smooth like a super-resolved frame (nearest-neighbour blocks would be an
    unrealistically easy case for 4:2:0 chroma)."""
    return [np.asarray(Image.fromarray(f).resize((2 * f.shape[1], 2 * f.shape[0]), Image.BICUBIC))
            for f in frames]


def write(path, frames, fps=FPS, **kw):
    with VideoWriter(path, fps, **kw) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp('clips')
    return {'audio': make_clip(d / 'with audio.mp4'), 'silent': make_clip(d / 'silent.mkv', audio=False)}


def test_is_video_file():
    assert all(is_video_file(n) for n in ['a.mp4', 'B.MKV', 'c d.mov', 'x.avi', 'y.webm', 'z.m4v'])
    assert not any(is_video_file(n) for n in ['a.png', 'mp4', 'a.mp4.txt', '.hidden.mp4', 'dir/'])


def test_probe_and_read(clips):
    info = probe(clips['audio'])
    assert info[:4] == (N, (H, W), FPS, True) and isinstance(info.fps, Fraction)
    assert probe(clips['silent'])[:4] == (N, (H, W), FPS, False)
    reader = VideoReader(clips['audio'])
    assert (len(reader), reader.size, reader.fps, reader.has_audio) == (N, (H, W), FPS, True)
    frames = list(reader)
    assert len(frames) == N
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    # each frame is its own array (a window may keep them), and the pattern moves
    assert not np.shares_memory(frames[0], frames[1]) and not np.array_equal(frames[0], frames[-1])
    part = list(reader.frames(5, 9))
    assert len(part) == 4 and all(np.array_equal(a, b) for a, b in zip(part, frames[5:9]))
    assert len(list(reader.frames(10))) == 2


def test_round_trip_keeps_count_size_fps_audio(clips, tmp_path):
    src = clips['audio']
    frames = upscale2(list(VideoReader(src)))
    out_dir = tmp_path / 'out dir é'
    out = write(out_dir / 'clip ü 2x.mp4', frames, fps=probe(src).fps, source=src)
    assert probe(out)[:4] == (N, (2 * H, 2 * W), FPS, True)
    back = list(VideoReader(out))
    # measured 41.1 dB at CRF 10 (4:2:0 alone, at CRF 0, gives 42.5 dB on these frames;
    # without accurate chroma conversion it was 31.6 dB)
    assert psnr(back, frames) > 39.5
    assert os.listdir(out_dir) == [out.name]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600


def test_no_audio(clips, tmp_path):
    # a silent source gives a silent result; a colon in the name is a file, not a protocol
    out = write(tmp_path / 'clip:1.mkv', list(VideoReader(clips['silent'])), source=clips["silent"])
    assert probe(out)[:4] == (N, (H, W), FPS, False)
    # no source: no audio, even from a source that has some
    out = write(tmp_path / 'plain.mov', list(VideoReader(clips['audio'])))
    assert probe(out)[:4] == (N, (H, W), FPS, False)


def test_odd_size_and_ntsc_rate(clips, tmp_path):
    """Odd sizes are written exactly (as yuv444p); 30000/1001 survives the round trip."""
    frames = [f[:2 * H - 1, :2 * W - 1] for f in upscale2(list(VideoReader(clips['silent'])))]
    out = write(tmp_path / 'odd.mp4', frames, fps=Fraction(30000, 1001))
    assert probe(out)[:4] == (N, (2 * H - 1, 2 * W - 1), Fraction(30000, 1001), False)
    assert psnr(list(VideoReader(out)), frames) > 40  # measured 42.0 dB


def test_rotated_phone_clip_is_upright(clips, tmp_path):
    rot = tmp_path / 'rot.mp4'
    ffmpeg('-display_rotation', 90, '-i', clips['silent'], '-c', 'copy', rot)
    assert probe(rot).size == (W, H)
    frames, upright = list(VideoReader(rot)), list(VideoReader(clips['silent']))
    assert frames[0].shape == (W, H, 3)
    assert psnr(frames, [np.rot90(f) for f in upright]) > 35


@pytest.mark.parametrize('case', ['random bytes', 'empty', 'missing', 'folder', 'audio only'])
def test_bad_input_is_one_line_user_error(case, tmp_path):
    path = tmp_path / f'bad {case}.mp4'
    if case == 'random bytes':
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif case == 'empty':
        path.write_bytes(b'')
    elif case == 'folder':
        path.mkdir()
    elif case == 'audio only':
        ffmpeg('-f', 'lavfi', '-i', 'sine', '-t', 0.3, '-c:a', 'aac', path)
    want = {'random bytes': 'cannot decode video: Invalid data found', 'empty': 'cannot decode video',
            'missing': 'no such file', 'folder': 'is a directory', 'audio only': 'no video stream'}[case]
    for call in (probe, VideoReader):
        with pytest.raises(UserError) as e:
            call(path)
        msg = str(e.value)
        assert msg.startswith(str(path) + ': ') and want in msg and '\n' not in msg, msg
        assert len(msg) < len(str(path)) + 150, msg
    if case == 'random bytes':
        with pytest.raises(UserError, match='cannot decode video'):
            VideoWriter(tmp_path / 'out.mp4', FPS, source=path)


@pytest.mark.parametrize('exc', [RuntimeError, KeyboardInterrupt])
def test_interrupted_writer_leaves_nothing(exc, clips, tmp_path):
    frames = list(VideoReader(clips['audio']))
    (tmp_path / 'old.mp4').write_bytes(b'previous result')
    with pytest.raises(exc):
        with VideoWriter(tmp_path / 'new.mp4', FPS, source=clips["audio"]) as w, \
                VideoWriter(tmp_path / 'old.mp4', FPS) as w2:
            for f in frames[:5]:
                w.write(f)
                w2.write(f)
            assert len(os.listdir(tmp_path)) == 3  # old.mp4 and the two hidden temporaries
            # named so that the next run's clean-up removes what a kill -9 leaves
            assert all(is_temp_name(n) for n in os.listdir(tmp_path) if n != 'old.mp4')
            raise exc('stop')
    assert os.listdir(tmp_path) == ['old.mp4']
    assert (tmp_path / 'old.mp4').read_bytes() == b'previous result'


def test_writer_rejects_bad_use(tmp_path):
    frame = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(UserError, match='cannot write H.264 video to ".webm"'):
        VideoWriter(tmp_path / 'a.webm', FPS)
    with pytest.raises(UserError, match='no frames to write'):
        VideoWriter(tmp_path / 'a.mp4', FPS).close()
    w = VideoWriter(tmp_path / 'a.mp4', FPS)
    w.write(frame)
    with pytest.raises(ValueError, match='uint8 HxWx3'):
        w.write(frame.astype(np.float32))
    with pytest.raises(ValueError, match='the video is 48x32'):
        w.write(np.zeros((H, W + 2, 3), np.uint8))
    w.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='crf'):
        VideoWriter(tmp_path / 'a.mp4', FPS, crf=60)
    assert DEFAULT_CRF == 10


def test_frame_count_is_checked(clips):
    """A stream that decodes to more or fewer frames than its packets is an error, not a shift."""
    reader = VideoReader(clips['silent'])
    reader.n_frames = N + 1
    with pytest.raises(UserError, match=f'ends after {N} of its {N + 1} frames'):
        list(reader)
    reader.n_frames = N - 1
    with pytest.raises(UserError, match=f'more than the {N - 1} frames'):
        list(reader)


def test_close_stops_ffmpeg(clips):
    reader = VideoReader(clips['audio'])
    it = iter(reader)
    next(it)
    (proc,) = reader._procs
    assert proc.poll() is None
    reader.close()
    assert proc.poll() is not None and not reader._procs


def test_streaming_memory_is_frame_sized(tmp_path):
    """Reading 200 frames takes no more memory than reading 20: the reader is a generator
    and only the frame being handed out is held (the control, keeping them, holds 200)."""
    frame_bytes = H * W * 3

    def peak(n, keep):
        reader = VideoReader(make_clip(tmp_path / f'{n}.mp4', n=n, audio=False))
        assert inspect.isgenerator(iter(reader))
        tracemalloc.start()
        try:
            frames = list(reader) if keep else None
            count = len(frames) if keep else sum(1 for _ in reader)
            used = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert count == n
        return used

    short, long = peak(20, False), peak(200, False)
    assert long < short + 2 * frame_bytes, (short, long)  # measured: equal within 100 bytes
    assert peak(200, True) > short + 150 * frame_bytes  # the measure does see frames kept
