"""infer/compare.py (--compare): bicubic | result | ground truth, for frame folders and video files,
on a run folder laid out as the run leaves it (no model needed: the "result" is a known picture)."""
from types import SimpleNamespace

import numpy as np
from PIL import Image

from test_video import make_clip, psnr
from test_video_real import times

from jittor_sbvsr.data.kernels import bicubic_upscale
from jittor_sbvsr.data.video import VideoReader, VideoWriter, probe
from jittor_sbvsr.infer.compare import side_by_side, split_screen, write_compare
from jittor_sbvsr.infer.inputs import Video

ARGS = dict(n_seq=3, scale=2, size_must_mode=1, crf=10)


def test_panels():
    a, b, c = (np.full((4, 9, 3), v, np.uint8) for v in (10, 20, 30))
    row = side_by_side([a, b, c])
    assert row.shape == (4, 9 * 3 + 2 * 4, 3)
    assert (row[:, :9] == 10).all() and (row[:, 13:22] == 20).all() and (row[:, 9:13] == 255).all()
    s = split_screen([a, b, c])
    assert s.shape == a.shape
    assert (s[:, 0] == 10).all() and (s[:, 4] == 20).all() and (s[:, 8] == 30).all()
    assert (s[:, 2] == 255).all() and (s[:, 3] == 255).all()  # the line at column 3


def test_frame_folder_compare(tmp_path):
    rng = np.random.default_rng(0)
    lr = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(4)]
    out = tmp_path / 'infer_x'
    files = {}
    for kind, pics in (('lr', lr), ('gt', [255 - bicubic_upscale(f, 2) for f in lr]),
                       ('sr', [np.full((20, 24, 3), 7 * t, np.uint8) for t in range(4)])):
        folder = (out / 'v') if kind == 'sr' else (tmp_path / kind)
        folder.mkdir(parents=True)
        files[kind] = []
        for t, p in enumerate(pics):
            Image.fromarray(p).save(folder / f'f{t}.png')
            files[kind].append(str(folder / f'f{t}.png'))
    v = Video('v', files['lr'], files['gt'], (10, 12), None, 4, None, None, None)
    windows = [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    path, why = write_compare(SimpleNamespace(save_image=True, **ARGS), str(out), v, windows)
    assert why is None
    for t in range(4):
        got = np.asarray(Image.open(f'{path}/f{t}.png'))
        assert got.shape == (20, 3 * 24 + 8, 3)
        assert np.array_equal(got[:, :24], bicubic_upscale(lr[t], 2))
        assert (got[:, 28:52] == 7 * t).all()
        assert np.array_equal(got[:, 56:], 255 - bicubic_upscale(lr[t], 2))
    path, why = write_compare(SimpleNamespace(save_image=False, **ARGS), str(out), v, windows)
    assert path is None and '--no_save_image' in why


def test_video_compare_is_a_split_screen_with_the_sound(tmp_path):
    clip = make_clip(tmp_path / 'clip.mp4', n=6)
    info = probe(clip)
    out = tmp_path / 'infer_x'
    lr = list(VideoReader(clip))
    with VideoWriter(out / 'clip.mp4', info.fps, source=clip, info=info) as w:  # the run's result
        for f in lr:
            w.write(np.full((2 * f.shape[0], 2 * f.shape[1], 3), 200, np.uint8))
    v = Video('clip', str(clip), None, info.size, None, 6, info.fps, info, None)
    windows = [[max(0, t - 1), t, min(5, t + 1)] for t in range(6)]
    path, why = write_compare(SimpleNamespace(save_image=False, **ARGS), str(out), v, windows)
    assert why is None and path == str(out / 'clip_compare.mp4')
    got = probe(path)
    assert got.size == (64, 96) and got.n_frames == 6 and got.has_audio and times(path) == times(clip)
    frames = list(VideoReader(path))
    assert psnr([f[:, :44] for f in frames], [bicubic_upscale(f, 2)[:, :44] for f in lr]) > 30
    assert np.abs(np.stack(frames)[:, :, 52:].astype(int) - 200).max() <= 3
