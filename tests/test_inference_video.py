"""Video files through inference: round trip (count, x4 size, fps, audio), GT videos, streaming memory."""
import os
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from conftest import infer_here
from test_inference_cli import run_cli
from test_video import FPS, H, W, make_clip

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.data.windows import window_indices
from jittor_sbvsr.data.video import VideoReader, probe
from jittor_sbvsr.infer.frames import FrameSource


@pytest.mark.parametrize('border', [True, False])
def test_frame_source_holds_a_window(border):
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(30)]
    windows = window_indices(30, 5, border=border)
    read = []

    def lazy():
        for i, f in enumerate(frames):
            read.append(i)
            yield f

    src = FrameSource(lazy(), windows)
    for k, w in enumerate(windows):
        got = src.window(k)
        assert all(g is frames[i] for g, i in zip(got, w))
        assert max(read) == max(w)  # read on demand, not ahead
        assert len(src._held) <= 5  # frames held now


def test_video_round_trip(tmp_path, recipe_pkl):
    clip = make_clip(tmp_path / 'my clip.mp4')  # 12 frames 32x48, 25 fps, with audio
    r = run_cli('--input_path', clip, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out',
                '--infer_flag', 'v')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'out' / 'infer_v'
    info = probe(out / 'my clip.mp4')
    assert (info.n_frames, info.size, info.fps, info.has_audio) == (12, (4 * H, 4 * W), FPS, True)
    assert not (out / 'my clip').exists()  # no PNGs unless --save_image
    assert 'video files are restored with --border' in r.stdout
    assert '[i ' not in r.stderr  # quiet start: Jittor's info lines only with --verbose


def test_video_folder_with_gt_videos_and_pngs(tmp_path, recipe_pkl):
    lr, gt = tmp_path / 'LR', tmp_path / 'GT'
    lr.mkdir()
    gt.mkdir()
    make_clip(lr / 'a.mkv', n=7, audio=False)
    make_clip(gt / 'a.mp4', n=7, audio=False, size=f'{4 * W}x{4 * H}')
    r = run_cli('--input_path', lr, '--gt_path', gt, '--model_path', recipe_pkl, '--result_path',
                tmp_path / 'out', '--infer_flag', 'g', '--save_image', '--crf', '18', '--verbose')
    assert r.returncode == 0, r.stderr
    assert '[i ' in r.stderr  # --verbose: Jittor's start-up lines shown
    out = tmp_path / 'out' / 'infer_g'
    info = probe(out / 'a.mp4')
    assert (info.n_frames, info.size, info.has_audio) == (7, (4 * H, 4 * W), False)
    assert sorted(os.listdir(out / 'a')) == [f'{t:08d}.png' for t in range(7)]
    assert 'Total AVG-PSNR' in r.stdout
    # a GT video of another frame count: refused before any output
    make_clip(gt / 'a.mp4', n=6, audio=False, size=f'{4 * W}x{4 * H}')
    r = run_cli('--input_path', lr, '--gt_path', gt, '--model_path', recipe_pkl, '--result_path',
                tmp_path / 'out', '--infer_flag', 'bad')
    assert r.returncode != 0 and 'has 6 frames, the input 7' in r.stderr
    assert not (tmp_path / 'out' / 'infer_bad').exists()


def test_undecodable_video_is_refused_before_output(tmp_path, recipe_pkl):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(os.urandom(4000))
    r = run_cli('--input_path', bad, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out')
    assert r.returncode != 0 and 'broken.mp4' in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path / 'out').exists()


def test_streaming_memory_does_not_grow_with_length(tmp_path, recipe_pkl):
    """Peak Python/numpy memory of a 60-frame clip is that of a 12-frame one: frames are
    decoded as windows need them and written when done (60 HR recons would be ~18 MB)."""
    def peak(n, flag, measure=True):
        clip = make_clip(tmp_path / f'c{n}.mp4', n=n, audio=False)
        argv = ['--input_path', clip, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out',
                '--infer_flag', flag]
        if measure:
            tracemalloc.start()
        try:
            infer_here(*argv)
            used = tracemalloc.get_traced_memory()[1] if measure else 0
        finally:
            if measure:
                tracemalloc.stop()
        assert probe(tmp_path / 'out' / f'infer_{flag}' / f'c{n}.mp4').n_frames == n
        return used

    peak(12, 'warm', measure=False)  # first-use compilation out of the measure
    short, long = peak(12, 's'), peak(60, 'l')
    hr_frame = 4 * H * 4 * W * 3 * 4
    assert long < short + 10 * hr_frame, (short, long)  # all frames held: + 48 frames


def test_part_of_a_video_with_ground_truth_and_compare(tmp_path, recipe_pkl):
    """--start/--duration: only that part is run, its sound cut with it; --compare beside it; the
    log puts bicubic beside the model. A range past the end: one line, nothing written."""
    (tmp_path / 'LR').mkdir()
    (tmp_path / 'GT').mkdir()
    lr = make_clip(tmp_path / 'LR' / 'a.mp4', n=12)
    gt = make_clip(tmp_path / 'GT' / 'a.mp4', n=12, audio=False, size=f'{4 * W}x{4 * H}')
    r = run_cli('--input_path', lr, '--gt_path', gt, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out',
                '--infer_flag', 'p', '--start', '4f', '--duration', '0.2', '--compare')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'out' / 'infer_p'
    info = probe(out / 'a.mp4')
    assert (info.n_frames, info.size, info.has_audio) == (5, (4 * H, 4 * W), True)  # 0.2 s at 25 fps
    assert [info.time_base * t for t in info.pts] == [Fraction(k, FPS) for k in range(5)]
    assert 'frames 4..8 of 12' in r.stdout and '# Total bicubic AVG-PSNR=' in r.stdout
    frames = list(VideoReader(out / 'a.mp4'))
    truth = list(VideoReader(gt))[4:9]
    cmp = probe(out / 'a_compare.mp4')
    assert (cmp.n_frames, cmp.size) == (5, (4 * H, 4 * W)) and f'compare: {out / "a_compare.mp4"}' in r.stdout
    right = [f[:, -W:] for f in VideoReader(out / 'a_compare.mp4')]  # the ground-truth strip
    assert np.mean([np.abs(a.astype(int) - b[:, -W:]).mean() for a, b in zip(right, truth)]) < 3
    assert len(frames) == 5
    r = run_cli('--input_path', lr, '--model_path', recipe_pkl, '--result_path', tmp_path / 'out',
                '--infer_flag', 'late', '--start', '00:00:10')
    assert r.returncode == 2 and "--start 10 s is past the video's end" in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path / 'out' / 'infer_late').exists()
