"""data/degrade.py: blur + downsampling (against a direct loop and torch), rounding,
augmentation shared by all frames, the edge score of a patch."""
import numpy as np
import pytest

from jittor_sbvsr.data import degrade, kernels


def direct_blur_down(img, k, s):
    h, w, c = img.shape
    kh = k.shape[0]
    p = kh // 2
    out = np.zeros((-(-h // s), -(-w // s), c))
    for y in range(0, h, s):
        for x in range(0, w, s):
            for i in range(kh):
                for j in range(kh):
                    yy = min(max(y + i - p, 0), h - 1)
                    xx = min(max(x + j - p, 0), w - 1)
                    out[y // s, x // s] += k[i, j] * img[yy, xx]
    return out


def test_blur_down_vs_direct_loop():
    rng = np.random.default_rng(1)
    img = rng.random((10, 13, 3)).astype(np.float32) * 255
    k = rng.random((5, 5))
    k /= k.sum()
    k32 = k.astype(np.float32).astype(np.float64)
    for s in (1, 4):
        out = degrade.blur_down_np(img, k, s)
        assert out.dtype == np.float32 and out.shape == (-(-10 // s), -(-13 // s), 3)
        np.testing.assert_allclose(out, direct_blur_down(img.astype(np.float64), k32, s), rtol=1e-6)
    # stacks of frames and single-channel images
    stack = np.stack([img, img[::-1]])
    out = degrade.blur_down_np(stack, k, 4)
    np.testing.assert_array_equal(out[1], degrade.blur_down_np(img[::-1], k, 4))
    np.testing.assert_array_equal(degrade.blur_down_np(img[:, :, 0], k, 4),
                                  degrade.blur_down_np(img, k, 4)[:, :, 0])


def test_blur_down_correlates_without_flip():
    img = np.zeros((8, 8, 1), np.float32)
    img[4, 4] = 1
    k = np.zeros((3, 3))
    k[0, 2] = 1  # out[y, x] = in[y - 1, x + 1]
    out = degrade.blur_down_np(img, k, 1)[:, :, 0]
    assert out[5, 3] == 1 and out.sum() == 1


def test_blur_down_matches_torch_conv2d():
    torch = pytest.importorskip('torch')
    import torch.nn.functional as F
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (24, 20, 3)).astype(np.float32)
    k = kernels.random_realistic_kernel(rng)
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    x = F.pad(x, (6, 6, 6, 6), mode='replicate')
    w = torch.zeros(3, 3, 13, 13)
    for c in range(3):
        w[c, c] = torch.from_numpy(k.astype(np.float32))
    ref = F.conv2d(x, w)[0].numpy().transpose(1, 2, 0)[::4, ::4]
    np.testing.assert_allclose(degrade.blur_down_np(img, k, 4), ref, rtol=1e-5, atol=1e-4)


def test_blur_down_uint8_rounds_half_to_even():
    img = np.array([[[0.5], [1.5]], [[2.5], [300.0]]], np.float32)
    out = degrade.blur_down_uint8(img, np.ones((1, 1)), 1)
    assert out[:, :, 0].tolist() == [[0, 2], [2, 255]]


def test_augment_same_for_all_frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    stack = np.stack([base, base + 1, base])
    seen = set()
    for seed in range(40):
        flags = degrade.draw_augment(np.random.default_rng(seed))
        seen.add(flags)
        out = degrade.augment(stack, np.random.default_rng(seed))
        expect = base
        if flags[0]:
            expect = expect[:, ::-1]
        if flags[1]:
            expect = expect[::-1]
        if flags[2]:
            expect = np.rot90(expect)
        np.testing.assert_array_equal(out[0], expect)
        np.testing.assert_array_equal(out[2], out[0])
        np.testing.assert_array_equal(out[1], out[0] + 1)
        as_list = degrade.augment([base, base + 1], np.random.default_rng(seed))
        np.testing.assert_array_equal(as_list[1], out[1])
    assert len(seen) == 8


def test_edge_score_equals_opencv_example():
    # np.mean(addWeighted(convertScaleAbs(Sobel(img, CV_16S, 1, 0)), 0.5,
    #                     convertScaleAbs(Sobel(img, CV_16S, 0, 1)), 0.5, 0)), OpenCV 4.14
    img = ((np.arange(6 * 7 * 3).reshape(6, 7, 3) * 37) % 256).astype(np.float64)
    assert degrade.edge_score(img) == float.fromhex('0x1.62cb2cb2cb2cbp+6')
    assert degrade.edge_score(np.full((9, 9, 3), 77, np.uint8)) == 0.0
    rng = np.random.default_rng(4)
    for _ in range(5):
        u8 = rng.integers(0, 256, (11, 13, 3)).astype(np.uint8)
        assert degrade.edge_score(u8) == degrade.edge_score(u8.astype(np.float64))
