"""data/datasets.py: the online blur-down training set, the paired test set, the LR-only set,
patch cropping, and their errors for bad data."""
import os

import numpy as np
import pytest

from conftest import copy_video
from jittor_sbvsr.data import degrade, kernels
from jittor_sbvsr.data.datasets import (LROnlyTrainSet, OnlineBlurDownTrainSet, PairedTestSet,
                                        _crop, reference_repeat)
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.loader import sample_rng
from jittor_sbvsr.errors import UserError

INV255 = np.float32(1.0 / 255.0)


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


@pytest.mark.parametrize('kind', ['gaussian', 'realistic'])
def test_online_train_set(demo_clips, kind):
    ds = OnlineBlurDownTrainSet(demo_clips, kind=kind, n_seq=5, patch_size=8, repeat=2)
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


def test_online_train_set_without_hr(demo_clips):
    full = OnlineBlurDownTrainSet(demo_clips, kind='realistic', n_seq=3, patch_size=8)
    lean = OnlineBlurDownTrainSet(demo_clips, kind='realistic', n_seq=3, patch_size=8, with_hr=False)
    a, b = full.get(4, sample_rng(2, 1, 4)), lean.get(4, sample_rng(2, 1, 4))
    assert b['hr'] is None
    np.testing.assert_array_equal(a['lr'], b['lr'])
    np.testing.assert_array_equal(a['kernel'], b['kernel'])


def test_online_train_set_frames_come_from_the_window(demo_clips):
    ds = OnlineBlurDownTrainSet(demo_clips, kind='gaussian', n_seq=3, patch_size=16, augment=False,
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


def test_paired_test_set(demo_clips):
    ts = PairedTestSet(demo_clips, n_seq=5)
    assert len(ts) == 2 * 3
    names = [ts.window_name(i) for i in range(len(ts))]
    assert names == ['000/00000002', '000/00000003', '000/00000004',
                     '001/00000002', '001/00000003', '001/00000004']
    item = ts.get(4)
    assert item['name'] == '001/00000003'
    assert item['lr'].shape == (5, 3, 16, 24) and item['hr'].shape == (5, 3, 64, 96)
    lr0 = read_frame(os.path.join(demo_clips, 'LR_blurdown_x4', '001', '00000001.png'))
    np.testing.assert_array_equal(item['lr'][0], (lr0.astype(np.float32) * INV255).transpose(2, 0, 1))
    hr4 = read_frame(os.path.join(demo_clips, 'HR', '001', '00000005.png'))
    np.testing.assert_array_equal(item['hr'][4], (hr4.astype(np.float32) * INV255).transpose(2, 0, 1))
    assert item['kernel'].shape == (9, 9)


def test_paired_test_set_pairs_like_inference(demo_clips, tmp_path):
    """HR frames pair with LR frames by name (extra HR frames are not used); with no
    name in common but equal counts, by position with a warning; HR exactly 4 x LR, on every frame."""
    sub = tmp_path / 'sub'
    copy_video(os.path.join(demo_clips, 'HR', '000'), sub / 'HR' / 'v')
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), sub / 'LR_blurdown_x4' / 'v')
    os.remove(sub / 'LR_blurdown_x4' / 'v' / '00000000.png')
    ts = PairedTestSet(str(sub), n_seq=5)
    assert ts.warnings == [] and [ts.window_name(i) for i in range(len(ts))] == ['v/00000003', 'v/00000004']
    np.testing.assert_array_equal(
        ts.get(0)['hr'][0], _u8(read_frame(os.path.join(demo_clips, 'HR', '000', '00000001.png'))))
    renamed = tmp_path / 'renamed'
    copy_video(os.path.join(demo_clips, 'HR', '000'), renamed / 'HR' / 'v')
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), renamed / 'LR_blurdown_x4' / 'v')
    for name in sorted(os.listdir(renamed / 'HR' / 'v')):
        os.rename(renamed / 'HR' / 'v' / name, renamed / 'HR' / 'v' / f'gt_{name}')
    ts = PairedTestSet(str(renamed), n_seq=5)
    assert len(ts.warnings) == 1 and 'by position' in ts.warnings[0]
    late = tmp_path / 'late'
    copy_video(os.path.join(demo_clips, 'HR', '000'), late / 'HR' / 'v')
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), late / 'LR_blurdown_x4' / 'v')
    copy_video(os.path.join(demo_clips, 'HR', '000'), late / 'HR' / 'w', n=1, size=(64, 92))
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), late / 'LR_blurdown_x4' / 'w', n=1)
    with pytest.raises(UserError, match=r'HR.w.00000000.png: ground truth is 64x92'):
        PairedTestSet(str(late), n_seq=1)


def _u8(img):
    return (img.astype(np.float32) * INV255).transpose(2, 0, 1)


def test_lr_only_set(demo_clips):
    ds = LROnlyTrainSet(os.path.join(demo_clips, 'LR_blurdown_x4'), n_seq=5, patch_size=12,
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


def test_train_set_errors(demo_clips, tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        OnlineBlurDownTrainSet(str(tmp_path / 'nope'))
    (tmp_path / 'nohr').mkdir()
    with pytest.raises(UserError, match='no HR folder'):
        OnlineBlurDownTrainSet(str(tmp_path / 'nohr'))
    (tmp_path / 'empty' / 'HR').mkdir(parents=True)
    with pytest.raises(UserError, match='empty'):
        OnlineBlurDownTrainSet(str(tmp_path / 'empty'))
    short = tmp_path / 'short'
    copy_video(os.path.join(demo_clips, 'HR', '000'), short / 'HR' / 'v1', n=3)
    with pytest.raises(UserError, match=r'video v1 has 3 frame\(s\)'):
        OnlineBlurDownTrainSet(str(short), n_seq=5)
    with pytest.raises(UserError, match=r'00000000.png: frame is 64x96, smaller than the 160x160'):
        OnlineBlurDownTrainSet(demo_clips, patch_size=40)
    with pytest.raises(UserError, match='unknown kernel type'):
        OnlineBlurDownTrainSet(demo_clips, kind='motion')
    bad = tmp_path / 'bad'
    copy_video(os.path.join(demo_clips, 'HR', '000'), bad / 'HR' / 'v1', n=5)
    (bad / 'HR' / 'v1' / '00000003.png').write_bytes(b'not a png')
    ds = OnlineBlurDownTrainSet(str(bad), n_seq=5, patch_size=8)
    with pytest.raises(UserError, match=r'00000003.png: cannot read image'):
        ds.get(0, sample_rng(0, 0, 0))


def test_empty_folder_error_message(tmp_path):
    (tmp_path / 'HR').mkdir()
    with pytest.raises(UserError) as e:
        OnlineBlurDownTrainSet(str(tmp_path))
    assert str(tmp_path / 'HR') in str(e.value)


def test_test_set_and_lr_only_errors(demo_clips, tmp_path):
    with pytest.raises(UserError, match='LR_blurdown_x4: missing'):
        os.makedirs(tmp_path / 'a' / 'HR')
        PairedTestSet(str(tmp_path / 'a'))
    b = tmp_path / 'b'
    copy_video(os.path.join(demo_clips, 'HR', '000'), b / 'HR' / 'v1', n=5)
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), b / 'LR_blurdown_x4' / 'v1', n=6)
    with pytest.raises(UserError, match=r'6 LR frames but 5 ground-truth frames.*\(00000005\)'):
        PairedTestSet(str(b))
    os.remove(b / 'LR_blurdown_x4' / 'v1' / '00000005.png')
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '001'), b / 'LR_blurdown_x4' / 'v2', n=6)
    with pytest.raises(UserError, match=r'v2: missing; video v2 is in'):
        PairedTestSet(str(b))
    c = tmp_path / 'c'
    copy_video(os.path.join(demo_clips, 'HR', '000'), c / 'HR' / 'v1', n=5, size=(60, 96))
    copy_video(os.path.join(demo_clips, 'LR_blurdown_x4', '000'), c / 'LR_blurdown_x4' / 'v1', n=5)
    with pytest.raises(UserError, match=r'ground truth is 60x96, but LR frame 00000000.png is 16x24 and x4 '
                                         r'makes 64x96'):
        PairedTestSet(str(c))
    with pytest.raises(UserError, match='smaller than the 40x40 patch'):
        LROnlyTrainSet(os.path.join(demo_clips, 'LR_blurdown_x4'), patch_size=40)
    with pytest.raises(UserError, match='does not exist'):
        LROnlyTrainSet(str(tmp_path / 'nothing'))
