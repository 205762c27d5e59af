"""data/kernels.py: Gaussian and realistic blur kernels, bicubic resizing (against MATLAB,
OpenCV and a direct evaluation), padding and the kernel image."""
import math

import numpy as np
import pytest

from jittor_sbvsr.data import kernels


def centre_of_mass(k):
    r, c = np.indices(k.shape)
    return float((k * r).sum() / k.sum()), float((k * c).sum() / k.sum())


def test_gaussian_sizes_follow_float_ceil():
    sizes = [kernels.gaussian_kernel_size(s) for s in kernels.GAUSSIAN_SIGMAS]
    assert len(kernels.GAUSSIAN_SIGMAS) == 17
    assert sizes == [5, 5, 5, 7, 7, 7, 7, 9, 9, 9, 11, 11, 11, 13, 13, 13, 13]
    assert kernels.gaussian_kernel_size(kernels.TEST_GAUSSIAN_SIGMA) == 9


def test_gaussian_kernel_matches_fspecial():
    k = kernels.gaussian_kernel(3, 0.5)  # MATLAB fspecial('gaussian', 3, 0.5)
    assert k[1, 1] == pytest.approx(0.619347, abs=1e-6)
    assert k[0, 1] == pytest.approx(0.083819, abs=1e-6)
    assert k[0, 0] == pytest.approx(0.011344, abs=1e-6)
    for s in kernels.GAUSSIAN_SIGMAS:
        k = kernels.gaussian_kernel(kernels.gaussian_kernel_size(s), s)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert (k >= 0).all() and np.allclose(k, k.T) and np.allclose(k, k[::-1])
        c = k.shape[0] // 2
        assert np.unravel_index(np.argmax(k), k.shape) == (c, c)


def test_random_gaussian_sigma_distribution():
    rng = np.random.default_rng(123)
    n = 17 * 300
    draws = [kernels.random_gaussian_kernel(rng, return_sigma=True) for _ in range(n)]
    sigmas = [s for _, s in draws]
    assert set(sigmas) == set(kernels.GAUSSIAN_SIGMAS)
    counts = np.array([sigmas.count(s) for s in kernels.GAUSSIAN_SIGMAS])
    assert counts.min() > 300 * 0.7 and counts.max() < 300 * 1.3
    for k, s in draws[:40]:
        assert k.shape == (kernels.gaussian_kernel_size(s),) * 2


def test_realistic_kernels():
    rng = np.random.default_rng(0)
    ks = [kernels.random_realistic_kernel(rng) for _ in range(30)]
    for k in ks:
        assert k.shape == (13, 13) and k.dtype == np.float64
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert (k >= 0).all()
        r, c = centre_of_mass(k)
        # centred on 15.5 of the 31x31 grid -> about 6.2 on the 13x13 grid
        assert 5.8 < r < 6.6 and 5.8 < c < 6.6
    flat = np.stack([k.ravel() for k in ks])
    assert len({k.tobytes() for k in ks}) == len(ks)
    assert np.abs(flat - flat.mean(0)).max() > 0.01  # shapes really differ


def test_realistic_kernel_geometry():
    no_noise = np.zeros((31, 31))
    iso = kernels.realistic_kernel_from_params(8.0, 8.0, 0.3, no_noise)
    np.testing.assert_allclose(iso, iso.T, atol=1e-12)
    # theta = 0: lambda_1 is the variance along x (columns)
    wide = kernels.realistic_kernel_from_params(16.0, 3.0, 0.0, no_noise)
    r, c = np.indices(wide.shape)
    cr, cc = centre_of_mass(wide)
    var_rows = (wide * (r - cr) ** 2).sum()
    var_cols = (wide * (c - cc) ** 2).sum()
    assert var_cols > 2 * var_rows
    tall = kernels.realistic_kernel_from_params(16.0, 3.0, np.pi / 2, no_noise)
    np.testing.assert_allclose(tall, wide.T, atol=1e-10)


def naive_cubic(src, oh, ow, a=-0.75):
    """Direct evaluation of the Keys kernel (a=-0.75), half-pixel centres, clamped borders."""
    def w(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        if t < 2:
            return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
        return 0.0

    h, wd = src.shape
    out = np.zeros((oh, ow))
    for y in range(oh):
        fy = (y + 0.5) * h / oh - 0.5
        sy = math.floor(fy)
        for x in range(ow):
            fx = (x + 0.5) * wd / ow - 0.5
            sx = math.floor(fx)
            acc = 0.0
            for i in range(sy - 1, sy + 3):
                for j in range(sx - 1, sx + 3):
                    acc += (w(fy - i) * w(fx - j)
                            * src[min(max(i, 0), h - 1), min(max(j, 0), wd - 1)])
            out[y, x] = acc
    return out


def test_bicubic_resize_vs_naive():
    rng = np.random.default_rng(5)
    for (h, w, oh, ow) in [(31, 31, 13, 13), (5, 8, 11, 3), (9, 4, 9, 7)]:
        src = rng.random((h, w))
        np.testing.assert_allclose(kernels.bicubic_resize(src, (oh, ow)), naive_cubic(src, oh, ow),
                                   atol=2e-6)
    src = rng.random((7, 6, 3))
    out = kernels.bicubic_resize(src, (4, 9))
    for ch in range(3):
        np.testing.assert_array_equal(out[:, :, ch], kernels.bicubic_resize(src[:, :, ch], (4, 9)))


def test_bicubic_resize_equals_opencv_example():
    # cv2.resize(src, (7, 3), interpolation=cv2.INTER_CUBIC), OpenCV 4.14, float64 input
    src = (np.arange(20, dtype=np.float64).reshape(4, 5) ** 2) / 7.0
    expected = [float.fromhex(v) for v in (
        '0x1.3459698213780p-2', '0x1.cce77700f946fp-2', '0x1.9ce9bf0280f1cp-1',
        '0x1.4228a94924925p+0', '0x1.d08446656fa38p+0', '0x1.5f0434fb4e8e0p+1',
        '0x1.b6898e4bcdd40p+1', '0x1.da32f64924925p+2', '0x1.14a80a9249248p+3',
        '0x1.55b5982492493p+3', '0x1.8e49249249248p+3', '0x1.ca31aca492493p+3',
        '0x1.0ec42e9b6db6dp+4', '0x1.2b19e9a492492p+4', '0x1.d6e7ec4db6711p+4',
        '0x1.fc1443ab6da98p+4', '0x1.1bb710ae1d040p+5', '0x1.346338adb6db6p+5',
        '0x1.4de49fe4f6a05p+5', '0x1.7023d72edb748p+5', '0x1.87013cb5f60cdp+5')]
    out = kernels.bicubic_resize(src, (3, 7))
    assert out.ravel().tolist() == expected
    src2 = np.sin(np.arange(31 * 31, dtype=np.float64).reshape(31, 31) * 0.37) + 1.5
    out2 = kernels.bicubic_resize(src2, (13, 13))
    assert out2[6, 6] == float.fromhex('0x1.3f5c3f470ce04p+1')
    assert out2[0, 12] == float.fromhex('0x1.b64e81269dbc2p-1')
    assert out2.sum() == float.fromhex('0x1.fd989800b3d86p+7')


def test_pad_kernel_and_png():
    k = kernels.gaussian_kernel(5, 0.8)
    p = kernels.pad_kernel(k, 13)
    assert p.shape == (13, 13) and p.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(p[4:9, 4:9], k)
    img = kernels.kernel_image(k, zoom=16)
    assert img.shape == (80, 80) and img.dtype == np.uint8 and img.max() == 255
    with pytest.raises(ValueError):
        kernels.pad_kernel(np.ones((15, 15)), 13)


def test_kernel_image_handles_degenerate_kernels():
    assert kernels.kernel_image(np.zeros((13, 13))).max() == 0
    img = kernels.kernel_image(np.full((13, 13), np.nan))
    assert img.shape == (208, 208) and img.dtype == np.uint8


def test_evaluation_kernel_images_are_stretched_min_to_max():
    flat = kernels.kernel_image_minmax(np.full((13, 13), 1 / 169, np.float32))
    assert flat.dtype == np.uint8 and flat.shape == (13, 13, 3) and flat.max() == 0
    k = np.zeros((13, 13), np.float32)
    k[6, 6] = 1
    k[0, 0] = np.nan
    img = kernels.kernel_image_minmax(k)
    assert img[6, 6, 0] == 255 and img[0, 0, 0] == 0


def test_bicubic_upscale_is_matlab_imresize():
    """The bicubic baseline: Keys a = -0.5 on (d + 0.5) / s - 0.5, mirrored borders, rounded."""
    # [1 2] -> 4 samples by hand from the definition: the first output sits at -0.25, its taps at
    # -2..1 (mirrored to 1, 0, 0, 1) have weights -3/128, 29/128, 111/128, -9/128: 90.625 for
    # [100 200]; the second at 0.25, taps -1..2 (mirrored 0, 0, 1, 1), weights -9, 111, 29, -3 /128
    row = np.array([[10, 20]], np.uint8) * 10
    out = kernels._separable(row.astype(np.float64), kernels._matlab_taps(1, 2), kernels._matlab_taps(2, 2))
    np.testing.assert_allclose(out[0], [90.625, 120.3125, 179.6875, 209.375], atol=1e-9)
    assert kernels.bicubic_upscale(row, 2)[0].tolist() == [91, 120, 180, 209]
    # away from the borders (where Pillow clamps instead of mirroring) Pillow's own bicubic, in float
    from PIL import Image
    src = np.random.default_rng(3).integers(0, 256, (12, 15), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(src.astype(np.float32), 'F').resize((60, 48), Image.BICUBIC))
    ours = kernels._separable(src.astype(np.float64), kernels._matlab_taps(12, 4), kernels._matlab_taps(15, 4))
    np.testing.assert_allclose(ours[8:-8, 8:-8], pil[8:-8, 8:-8], atol=2e-3)
    rgb = np.stack([src, 255 - src, src // 2], axis=2)
    up = kernels.bicubic_upscale(rgb, 4)
    assert up.shape == (48, 60, 3) and up.dtype == np.uint8
    assert np.array_equal(up[:, :, 1], kernels.bicubic_upscale(rgb[:, :, 1], 4))
    assert np.array_equal(kernels.bicubic_upscale(np.full((5, 7), 77, np.uint8), 4), np.full((20, 28), 77))
