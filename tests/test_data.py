"""Training / test data: kernels, degradation, augmentation, datasets and the loader."""
import math
import os

import numpy as np
import pytest

from jittor_sbvsr.data import degrade, kernels
from jittor_sbvsr.data.datasets import (LROnlyTrainSet, OnlineBlurDownTrainSet, PairedTestSet,
                                        _crop, reference_repeat)
from jittor_sbvsr.data.frames import read_frame
from jittor_sbvsr.data.loader import Loader, collate, epoch_order, sample_rng
from jittor_sbvsr.data.synthetic import make_demo_videos
from jittor_sbvsr.errors import UserError

INV255 = np.float32(1.0 / 255.0)


@pytest.fixture(scope='session')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    make_demo_videos(root, n_videos=2, n_frames=7, hr_size=(64, 96), seed=0)
    return str(root)


def centre_of_mass(k):
    r, c = np.indices(k.shape)
    return float((k * r).sum() / k.sum()), float((k * c).sum() / k.sum())


# ------------------------------------------------------------------ kernels

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


# ------------------------------------------------------------------ degradation

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


def test_crop_redraws_flat_patches():
    flat = np.full((3, 40, 40, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    _crop(flat, 16, rng, degrade.SMOOTH_THRESHOLD, 1)
    probe = np.random.default_rng(0)
    for _ in range(2 * degrade.MAX_CROP_TRIES):
        probe.integers(0, 25)
    assert rng.random() == probe.random()  # exactly MAX_CROP_TRIES crops were drawn
    busy = np.random.default_rng(9).integers(0, 256, (3, 40, 40, 3)).astype(np.uint8)
    rng = np.random.default_rng(0)
    patch = _crop(busy, 16, rng, degrade.SMOOTH_THRESHOLD, 1)
    probe = np.random.default_rng(0)
    x0, y0 = int(probe.integers(0, 25)), int(probe.integers(0, 25))
    np.testing.assert_array_equal(patch, busy[:, y0:y0 + 16, x0:x0 + 16])
    assert rng.random() == probe.random()


# ------------------------------------------------------------------ datasets

@pytest.mark.parametrize('kind', ['gaussian', 'realistic'])
def test_online_train_set(demo, kind):
    ds = OnlineBlurDownTrainSet(demo, kind=kind, n_seq=5, patch_size=8, repeat=2)
    assert ds.n_windows == 2 * (7 - 5 + 1) and len(ds) == 12
    item = ds.get(10, sample_rng(0, 0, 10))
    assert item['lr'].shape == (5, 3, 8, 8) and item['lr'].dtype == np.float32
    assert item['hr'].shape == (5, 3, 32, 32) and item['hr'].dtype == np.float32
    assert item['kernel'].shape == (13, 13) and item['kernel'].dtype == np.float32
    assert item['kernel'].sum() == pytest.approx(1.0, abs=1e-5)
    assert item['name'] == ds.window_name(10) == '001/00000003'
    for key in ('lr', 'hr'):
        assert 0 <= item[key].min() and item[key].max() <= 1
    # the LR is the HR blurred down with the returned kernel, not rounded
    hr_u8 = np.rint(item['hr'] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    lr = degrade.blur_down_np(hr_u8, item['kernel'].astype(np.float64), 4) * INV255
    np.testing.assert_array_equal(item['lr'], lr.transpose(0, 3, 1, 2))
    assert not np.array_equal(item['lr'], np.round(item['lr'] * 255) / 255)
    if kind == 'gaussian':
        assert item['sigma'] in kernels.GAUSSIAN_SIGMAS
    # same rng -> same sample; another seed -> another sample
    again = ds.get(10, sample_rng(0, 0, 10))
    np.testing.assert_array_equal(again['lr'], item['lr'])
    other = ds.get(10, sample_rng(1, 0, 10))
    assert not np.array_equal(other['lr'], item['lr'])


def test_online_train_set_without_hr(demo):
    full = OnlineBlurDownTrainSet(demo, kind='realistic', n_seq=3, patch_size=8)
    lean = OnlineBlurDownTrainSet(demo, kind='realistic', n_seq=3, patch_size=8, with_hr=False)
    a, b = full.get(4, sample_rng(2, 1, 4)), lean.get(4, sample_rng(2, 1, 4))
    assert b['hr'] is None
    np.testing.assert_array_equal(a['lr'], b['lr'])
    np.testing.assert_array_equal(a['kernel'], b['kernel'])


def test_online_train_set_frames_come_from_the_window(demo):
    ds = OnlineBlurDownTrainSet(demo, kind='gaussian', n_seq=3, patch_size=16, augment=False,
                                smooth_threshold=None)
    item = ds.get(0, sample_rng(0, 0, 0))
    hr = np.rint(item['hr'] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    _, paths = ds.window_paths(0)
    full = read_frame(paths[0])
    hits = [(y, x) for y in range(64 - 64 + 1) for x in range(96 - 64 + 1)
            if np.array_equal(full[y:y + 64, x:x + 64], hr[0])]
    assert len(hits) == 1
    y, x = hits[0]
    for t in range(3):
        np.testing.assert_array_equal(read_frame(paths[t])[y:y + 64, x:x + 64], hr[t])


def test_paired_test_set(demo):
    ts = PairedTestSet(demo, n_seq=5)
    assert len(ts) == 2 * 3
    names = [ts.window_name(i) for i in range(len(ts))]
    assert names == ['000/00000002', '000/00000003', '000/00000004',
                     '001/00000002', '001/00000003', '001/00000004']
    item = ts.get(4)
    assert item['name'] == '001/00000003'
    assert item['lr'].shape == (5, 3, 16, 24) and item['hr'].shape == (5, 3, 64, 96)
    lr0 = read_frame(os.path.join(demo, 'LR_blurdown_x4', '001', '00000001.png'))
    np.testing.assert_array_equal(item['lr'][0], (lr0.astype(np.float32) * INV255).transpose(2, 0, 1))
    hr4 = read_frame(os.path.join(demo, 'HR', '001', '00000005.png'))
    np.testing.assert_array_equal(item['hr'][4], (hr4.astype(np.float32) * INV255).transpose(2, 0, 1))
    assert item['kernel'].shape == (9, 9)


def test_paired_test_set_pairs_like_inference(demo, tmp_path):
    """Issue 11: HR frames pair with LR frames by name (extra HR frames are not used); with no
    name in common but equal counts, by position with a warning; HR exactly 4 x LR, on every frame."""
    sub = tmp_path / 'sub'
    _copy_video(os.path.join(demo, 'HR', '000'), sub / 'HR' / 'v')
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), sub / 'LR_blurdown_x4' / 'v')
    os.remove(sub / 'LR_blurdown_x4' / 'v' / '00000000.png')
    ts = PairedTestSet(str(sub), n_seq=5)
    assert ts.warnings == [] and [ts.window_name(i) for i in range(len(ts))] == ['v/00000003', 'v/00000004']
    np.testing.assert_array_equal(
        ts.get(0)['hr'][0], _u8(read_frame(os.path.join(demo, 'HR', '000', '00000001.png'))))
    renamed = tmp_path / 'renamed'
    _copy_video(os.path.join(demo, 'HR', '000'), renamed / 'HR' / 'v')
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), renamed / 'LR_blurdown_x4' / 'v')
    for name in sorted(os.listdir(renamed / 'HR' / 'v')):
        os.rename(renamed / 'HR' / 'v' / name, renamed / 'HR' / 'v' / f'gt_{name}')
    ts = PairedTestSet(str(renamed), n_seq=5)
    assert len(ts.warnings) == 1 and 'by position' in ts.warnings[0]
    late = tmp_path / 'late'
    _copy_video(os.path.join(demo, 'HR', '000'), late / 'HR' / 'v')
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), late / 'LR_blurdown_x4' / 'v')
    _copy_video(os.path.join(demo, 'HR', '000'), late / 'HR' / 'w', n=1, size=(64, 92))
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), late / 'LR_blurdown_x4' / 'w', n=1)
    with pytest.raises(UserError, match=r'HR.w.00000000.png: ground truth is 64x92'):
        PairedTestSet(str(late), n_seq=1)


def _u8(img):
    return (img.astype(np.float32) * INV255).transpose(2, 0, 1)


def test_lr_only_set(demo):
    ds = LROnlyTrainSet(os.path.join(demo, 'LR_blurdown_x4'), n_seq=5, patch_size=12,
                        n_frames_per_video=None)
    assert len(ds) == 6
    item = ds.get(3, sample_rng(0, 0, 3))
    assert item['lr'].shape == (5, 3, 12, 12) and item['hr'] is None and item['kernel'] is None
    assert item['lr'].dtype == np.float32 and 0 <= item['lr'].min() and item['lr'].max() <= 1
    assert np.array_equal(np.round(item['lr'] * 255) * INV255, item['lr'])  # exact uint8 levels


def test_reference_repeat():
    assert reference_repeat(11040, 8) == 1
    assert reference_repeat(46, 8) == 200
    assert reference_repeat(3, 8) == 1000


# ------------------------------------------------------------------ errors

def _copy_video(src, dst, n=None, size=None):
    from PIL import Image
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src))[:n]:
        img = Image.open(os.path.join(src, name))
        if size is not None:
            img = img.crop((0, 0, size[1], size[0]))
        img.save(os.path.join(dst, name))


def test_train_set_errors(demo, tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        OnlineBlurDownTrainSet(str(tmp_path / 'nope'))
    (tmp_path / 'nohr').mkdir()
    with pytest.raises(UserError, match='no HR folder'):
        OnlineBlurDownTrainSet(str(tmp_path / 'nohr'))
    (tmp_path / 'empty' / 'HR').mkdir(parents=True)
    with pytest.raises(UserError, match='empty'):
        OnlineBlurDownTrainSet(str(tmp_path / 'empty'))
    short = tmp_path / 'short'
    _copy_video(os.path.join(demo, 'HR', '000'), short / 'HR' / 'v1', n=3)
    with pytest.raises(UserError, match=r'video v1 has 3 frame\(s\)'):
        OnlineBlurDownTrainSet(str(short), n_seq=5)
    with pytest.raises(UserError, match=r'00000000.png: frame is 64x96, smaller than the 160x160'):
        OnlineBlurDownTrainSet(demo, patch_size=40)
    with pytest.raises(UserError, match='unknown kernel type'):
        OnlineBlurDownTrainSet(demo, kind='motion')
    bad = tmp_path / 'bad'
    _copy_video(os.path.join(demo, 'HR', '000'), bad / 'HR' / 'v1', n=5)
    (bad / 'HR' / 'v1' / '00000003.png').write_bytes(b'not a png')
    ds = OnlineBlurDownTrainSet(str(bad), n_seq=5, patch_size=8)
    with pytest.raises(UserError, match=r'00000003.png: cannot read image'):
        ds.get(0, sample_rng(0, 0, 0))


def test_empty_folder_error_message(tmp_path):
    (tmp_path / 'HR').mkdir()
    with pytest.raises(UserError) as e:
        OnlineBlurDownTrainSet(str(tmp_path))
    assert str(tmp_path / 'HR') in str(e.value)


def test_test_set_and_lr_only_errors(demo, tmp_path):
    with pytest.raises(UserError, match='LR_blurdown_x4: missing'):
        os.makedirs(tmp_path / 'a' / 'HR')
        PairedTestSet(str(tmp_path / 'a'))
    b = tmp_path / 'b'
    _copy_video(os.path.join(demo, 'HR', '000'), b / 'HR' / 'v1', n=5)
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), b / 'LR_blurdown_x4' / 'v1', n=6)
    with pytest.raises(UserError, match=r'6 LR frames but 5 ground-truth frames.*\(00000005\)'):
        PairedTestSet(str(b))
    os.remove(b / 'LR_blurdown_x4' / 'v1' / '00000005.png')
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '001'), b / 'LR_blurdown_x4' / 'v2', n=6)
    with pytest.raises(UserError, match=r'v2: missing; video v2 is in'):
        PairedTestSet(str(b))
    c = tmp_path / 'c'
    _copy_video(os.path.join(demo, 'HR', '000'), c / 'HR' / 'v1', n=5, size=(60, 96))
    _copy_video(os.path.join(demo, 'LR_blurdown_x4', '000'), c / 'LR_blurdown_x4' / 'v1', n=5)
    with pytest.raises(UserError, match=r'ground truth is 60x96, but LR frame 00000000.png is 16x24 and x4 '
                                         r'makes 64x96'):
        PairedTestSet(str(c))
    with pytest.raises(UserError, match='smaller than the 40x40 patch'):
        LROnlyTrainSet(os.path.join(demo, 'LR_blurdown_x4'), patch_size=40)
    with pytest.raises(UserError, match='does not exist'):
        LROnlyTrainSet(str(tmp_path / 'nothing'))


# ------------------------------------------------------------------ loader

def _batches(loader, epoch, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return list(loader)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x['name'] == y['name']
        for key in ('lr', 'hr', 'kernel', 'index'):
            np.testing.assert_array_equal(x[key], y[key])


def test_collate():
    out = collate([{'a': np.zeros(2), 'n': 'x', 'k': None, 's': 1.5},
                   {'a': np.ones(2), 'n': 'y', 'k': None, 's': 2.5}])
    assert out['a'].shape == (2, 2) and out['n'] == ['x', 'y'] and out['k'] is None
    assert out['s'].tolist() == [1.5, 2.5]
    with pytest.raises(ValueError):
        collate([{'k': None}, {'k': np.zeros(1)}])


def test_epoch_order():
    a = epoch_order(50, 3, 0)
    assert sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, epoch_order(50, 3, 0))
    assert not np.array_equal(a, epoch_order(50, 3, 1))
    assert not np.array_equal(a, epoch_order(50, 4, 0))
    assert epoch_order(5, 3, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_loader_is_deterministic_across_workers(demo):
    ds = OnlineBlurDownTrainSet(demo, kind='realistic', n_seq=3, patch_size=8, repeat=2)
    assert len(ds) == 20
    serial = Loader(ds, batch_size=3, shuffle=True, num_workers=0, seed=7)
    assert len(serial) == 7
    e0 = _batches(serial, 0)
    assert [b['lr'].shape for b in e0] == [(3, 3, 3, 8, 8)] * 6 + [(2, 3, 3, 8, 8)]
    assert sorted(i for b in e0 for i in b['index'].tolist()) == list(range(len(ds)))
    with Loader(ds, batch_size=3, shuffle=True, num_workers=2, seed=7) as procs:
        _assert_same(e0, _batches(procs, 0))
        e1 = _batches(procs, 1)
    with Loader(ds, batch_size=3, shuffle=True, num_workers=2, seed=7, worker_type='thread') as th:
        _assert_same(e1, _batches(th, 1))
    _assert_same(e1, _batches(serial, 1))
    # resume in the middle of an epoch
    _assert_same(e1[2:], _batches(serial, 1, start_batch=2))
    # every sample of every epoch has its own kernel
    kernels_seen = [k.tobytes() for b in e0 + e1 for k in b['kernel']]
    assert len(set(kernels_seen)) == len(kernels_seen) == 2 * len(ds)
    # the same index in another epoch gets another kernel
    first = {i: k.tobytes() for b in e0 for i, k in zip(b['index'].tolist(), b['kernel'])}
    second = {i: k.tobytes() for b in e1 for i, k in zip(b['index'].tolist(), b['kernel'])}
    assert all(first[i] != second[i] for i in first)


def test_loader_shards_each_global_batch_over_mpi_ranks(demo):
    """Ranks together see the batches of one loader with batch_size x world, same samples."""
    ds = OnlineBlurDownTrainSet(demo, kind='realistic', n_seq=3, patch_size=8, repeat=1)
    assert len(ds) == 10
    whole = Loader(ds, batch_size=4, shuffle=True, seed=7)
    ranks = [Loader(ds, batch_size=2, shuffle=True, seed=7, rank=r, world=2) for r in (0, 1)]
    for loader in [whole] + ranks:
        loader.set_epoch(3)
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 3
    big = _batches(whole, 3)
    parts = [_batches(r, 3) for r in ranks]
    # global batches of 4, 4, 2: the last one is rank 0's alone
    assert ranks[0].shard_sizes() == [(4, 2), (4, 2), (2, 2)]
    assert ranks[1].shard_sizes() == [(4, 2), (4, 2), (2, 0)]
    for j in range(2):
        for key in ('index', 'lr', 'hr', 'kernel'):
            np.testing.assert_array_equal(big[j][key], np.concatenate([parts[0][j][key], parts[1][j][key]]))
    _assert_same([big[2]], [parts[0][2]])
    # a rank without samples gets the batch's first one (weight 0 in the trainer)
    assert parts[1][2]['index'].tolist() == big[2]['index'].tolist()[:1]
    with pytest.raises(ValueError, match='rank 2 of world 2'):
        Loader(ds, rank=2, world=2)


def test_loader_drop_last_and_order(demo):
    ts = PairedTestSet(demo, n_seq=5)
    loader = Loader(ts, batch_size=4, shuffle=False, drop_last=True)
    batches = _batches(loader, 0)
    assert len(loader) == 1 and len(batches) == 1
    assert batches[0]['index'].tolist() == [0, 1, 2, 3]
    assert batches[0]['name'] == [ts.window_name(i) for i in range(4)]
    assert batches[0]['kernel'].shape == (4, 9, 9)
    lr_only = Loader(LROnlyTrainSet(os.path.join(demo, 'LR_blurdown_x4'), n_seq=5, patch_size=8),
                     batch_size=3, shuffle=True, seed=1)
    b = next(iter(lr_only))
    assert b['hr'] is None and b['kernel'] is None and b['lr'].shape == (3, 5, 3, 8, 8)


def test_loader_worker_errors_reach_the_caller(demo, tmp_path):
    bad = tmp_path / 'bad'
    _copy_video(os.path.join(demo, 'HR', '000'), bad / 'HR' / 'v1', n=5)
    (bad / 'HR' / 'v1' / '00000004.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    ds = OnlineBlurDownTrainSet(str(bad), n_seq=5, patch_size=8)
    with Loader(ds, batch_size=1, num_workers=1, worker_type='thread') as loader:
        with pytest.raises(UserError, match='00000004.png: cannot read image'):
            list(loader)


def test_demo_videos_are_deterministic(tmp_path):
    a = make_demo_videos(tmp_path / 'a', n_videos=1, n_frames=3, hr_size=(32, 48), seed=4,
                         kernel='realistic')
    b = make_demo_videos(tmp_path / 'b', n_videos=1, n_frames=3, hr_size=(32, 48), seed=4,
                         kernel='realistic')
    for sub in ('HR', 'LR_blurdown_x4'):
        for f in sorted(os.listdir(os.path.join(a[sub.lower() if sub == 'HR' else 'lr'], '000'))):
            pa = os.path.join(a['root'], sub, '000', f)
            pb = os.path.join(b['root'], sub, '000', f)
            np.testing.assert_array_equal(read_frame(pa), read_frame(pb))
    np.testing.assert_array_equal(np.load(os.path.join(a['kernels'], '000.npy')),
                                  np.load(os.path.join(b['kernels'], '000.npy')))
    f0 = read_frame(os.path.join(a['hr'], '000', '00000000.png'))
    f1 = read_frame(os.path.join(a['hr'], '000', '00000001.png'))
    assert f0.shape == (32, 48, 3) and not np.array_equal(f0, f1)  # the camera pans
