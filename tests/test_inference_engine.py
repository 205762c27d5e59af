"""Feature reuse across windows must not change the output.

Not bit for bit: Jittor fuses a cached (already computed) feature into a
different kernel than a fresh one, which moves the last float bit; the
bound is 1e-6 on the float output (the README's "Speed" section promises it).
"""
import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.data.folders import list_videos
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.windows import window_indices
from jittor_sbvsr.infer.engine import VideoSR
from jittor_sbvsr.infer.frames import FrameSource
from jittor_sbvsr.models import PWC_Recons


@pytest.fixture(scope='module')
def case(public_case):
    """(a small untrained model, the public case's first video, its border windows)."""
    net = PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=1)
    net.eval()
    name, paths = list_videos(public_case / 'LR')[0]
    frames = [read_frame(p) for p in paths]
    return net, frames, window_indices(len(frames), 5, border=True)


def test_reuse_moves_outputs_by_at_most_1e6_and_kernels_not_at_all(case):
    net, frames, windows = case
    on = list(VideoSR(net, reuse=True).windows(frames, windows))
    off = list(VideoSR(net, reuse=False).windows(frames, windows))
    assert len(on) == len(off) == 7
    for (k1, r1, ker1, _), (k2, r2, ker2, _) in zip(on, off):
        assert k1 == k2
        assert np.abs(r1 - r2).max() <= 1e-6
        assert np.array_equal(ker1, ker2)


def test_a_run_from_mid_video_gives_the_bits_of_a_whole_run(case):
    """An MPI rank's share (infer/split.py) starts with empty caches at its first window."""
    net, frames, windows = case
    engine = VideoSR(net, reuse=True)
    whole = [r for _, r, _, _ in engine.windows(FrameSource(iter(frames), windows), windows)]
    for start in (1, 3, 5):
        first = min(windows[start])
        source = FrameSource(iter(frames[first:]), windows, first=first)
        part = list(engine.windows(source, windows, start, start + 2))
        assert [k for k, _, _, _ in part] == [start, start + 1]
        for k, r, _, _ in part:
            assert np.array_equal(r, whole[k]), (start, k)
