"""Tiled inference (--tile / --tile_overlap): close to the untiled output,
exactly it when one tile covers the frame, same kernel, reuse still exact."""
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, psnr01, run_child

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.data.folders import list_videos
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.windows import window_indices
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.infer.engine import VideoSR, _ramp, check_tiles
from jittor_sbvsr.infer.memory_plan import tile_spans
from jittor_sbvsr.models import PWC_Recons


# ------------------------------------------------------------ geometry ----

@pytest.mark.parametrize('n,tile,overlap', [(32, 16, 8), (48, 16, 8), (180, 64, 16), (37, 10, 3), (20, 19, 0)])
def test_tile_spans_cover_the_axis(n, tile, overlap):
    spans = tile_spans(n, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(e - s == tile for s, e in spans)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < s1 and s1 <= e0 - overlap  # neighbours overlap by at least `overlap`
    for s, e in spans:  # blending weights: positive, <= 1, summing to > 0 everywhere
        w = _ramp((s, e), n, overlap, 4)
        assert w.shape == ((e - s) * 4,) and w.min() > 0 and w.max() <= 1
    assert tile_spans(32, 16, 8) == [(0, 16), (8, 24), (16, 32)]


def test_tile_spans_off_or_larger_than_the_frame():
    assert tile_spans(32, 0, 16) == [(0, 32)]
    assert tile_spans(32, 32, 16) == [(0, 32)]
    assert tile_spans(32, 100, 16) == [(0, 32)]
    assert np.array_equal(_ramp((0, 32), 32, 16, 4), np.ones(128))


def test_ramps_of_neighbours_sum_to_one():
    n, tile, overlap, s = 48, 16, 8, 4
    total = np.zeros(n * s)
    for a, b in tile_spans(n, tile, overlap):
        total[a * s:b * s] += _ramp((a, b), n, overlap, s)
    # regular steps: the falling ramp of one tile and the rising one of the next add up to 1
    assert np.allclose(total[:32 * s], 1.0)


def test_bad_tile_flags():
    with pytest.raises(UserError, match='--tile_overlap'):
        check_tiles(8, 16)
    with pytest.raises(UserError, match='>= 0'):
        check_tiles(-1, 16)


def test_cli_rejects_overlap_not_smaller_than_tile(tmp_path):
    """Refused for the tiles, not for the input: the input folder holds a readable clip."""
    (tmp_path / 'in' / 'clip').mkdir(parents=True)
    for t in range(5):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'in' / 'clip' / f'{t}.png')
    r = run_child([sys.executable, str(ROOT / 'inference.py'), '--input_path', str(tmp_path / 'in'),
                        '--tile', '8', '--result_path', str(tmp_path / 'out')],
                  capture_output=True, text=True, cwd=tmp_path, timeout=600, encoding='utf-8')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and '--tile_overlap' in lines[0], r.stderr[-2000:]
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------ outputs ----

@pytest.fixture(scope='module')
def untiled(recipe_net, clip):
    frames, windows = clip
    return list(VideoSR(recipe_net).windows(frames, windows))


def test_tiled_output_is_close_to_untiled(recipe_net, clip, untiled):
    frames, windows = clip
    engine = VideoSR(recipe_net, tile=16, overlap=8)
    assert len(engine.tiles(32, 48)) == 15
    tiled = list(engine.windows(frames, windows))
    for (k1, r1, ker1, _), (k2, r2, ker2, _) in zip(untiled, tiled):
        assert k1 == k2 and r1.shape == r2.shape == (1, 3, 128, 192)
        assert np.array_equal(ker1, ker2)  # the kernel is estimated on whole frames
        assert psnr01(r2, r1) >= 45.0  # measured ~49 dB


@pytest.mark.parametrize('tile', [48, 64])
def test_a_tile_as_large_as_the_frame_is_exactly_untiled(recipe_net, clip, untiled, tile):
    frames, windows = clip
    out = list(VideoSR(recipe_net, tile=tile, overlap=16).windows(frames, windows))
    for (_, r1, ker1, _), (_, r2, ker2, _) in zip(untiled, out):
        assert np.array_equal(r1, r2) and np.array_equal(ker1, ker2)


def test_reuse_under_tiling_changes_nothing(public_case):
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    net.eval()
    _, paths = list_videos(public_case / 'LR')[0]
    frames = [read_frame(p) for p in paths]
    windows = window_indices(len(frames), 5, border=True)[:4]
    on = list(VideoSR(net, reuse=True, tile=24, overlap=8).windows(frames, windows))
    off = list(VideoSR(net, reuse=False, tile=24, overlap=8).windows(frames, windows))
    assert len(on) == len(off) == 4
    for (_, r1, ker1, _), (_, r2, ker2, _) in zip(on, off):
        assert np.abs(r1 - r2).max() <= 1e-6
        assert np.array_equal(ker1, ker2)
