"""Frame listing (data/folders.py), decoding (data/images.py), windowing and tensor conversion
(data/windows.py) against the reference protocol."""
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jittor_sbvsr.data.folders import list_videos
from jittor_sbvsr.data.images import read_frame
from jittor_sbvsr.data.windows import crop_to_multiple, frames_to_input, to_uint8, window_indices
from jittor_sbvsr.errors import UserError

# ---------------------------------------------------------------- a PNG writer for the tests
# Pillow cannot write 16-bit colour PNGs, and it writes only the filters it likes;
# this writer covers every filter type and Adam7 interlacing.

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
          (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _filter_rows(rows, bpp, filters):
    """Filter a [h, stride] uint8 block; filters[y] picks the type of row y."""
    out = []
    prev = np.zeros(rows.shape[1], np.int32)
    for y, row in enumerate(rows.astype(np.int32)):
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        f = filters[y % len(filters)]
        if f == 0:
            res = row
        elif f == 1:
            res = row - left
        elif f == 2:
            res = row - prev
        elif f == 3:
            res = row - (left + prev) // 2
        else:
            pa, pb, pc = np.abs(prev - upleft), np.abs(left - upleft), np.abs(left + prev - 2 * upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            res = row - pred
        out.append(bytes([f]) + (res % 256).astype(np.uint8).tobytes())
        prev = row
    return b''.join(out)


def write_png(path, arr, filters=(0, 1, 2, 3, 4), interlace=False, split_idat=False):
    arr = np.asarray(arr)
    depth = 16 if arr.dtype == np.uint16 else 8
    a3 = arr[:, :, None] if arr.ndim == 2 else arr
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[a3.shape[2]]
    h, w, c = a3.shape
    bpp = c * depth // 8
    big = a3.astype('>u2') if depth == 16 else a3.astype(np.uint8)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b''
    for x0, y0, dx, dy in passes:
        sub = big[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = np.frombuffer(np.ascontiguousarray(sub).tobytes(), np.uint8).reshape(sub.shape[0], -1)
        raw += _filter_rows(rows, bpp, filters)

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)

    z = zlib.compress(raw)
    idat = [z[:len(z) // 2], z[len(z) // 2:]] if split_idat else [z]
    data = (b'\x89PNG\r\n\x1a\n'
            + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, int(interlace)))
            + b''.join(chunk(b'IDAT', d) for d in idat) + chunk(b'IEND', b''))
    with open(path, 'wb') as f:
        f.write(data)


def _round257(a):
    return np.floor(a.astype(np.float64) / 257 + 0.5).astype(np.uint8)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


# ---------------------------------------------------------------- list_videos

def _touch_png(path, h=4, w=6):
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def test_list_public_case(public_case):
    videos = list_videos(public_case / 'LR')
    assert [n for n, _ in videos] == ['000', '001']
    for name, frames in videos:
        assert [os.path.basename(p) for p in frames] == [f'{i:08d}.png' for i in range(7)]
        assert all(os.path.isfile(p) for p in frames)


def test_list_videos_sorted_and_filtered(tmp_path):
    for v in ['b', 'a', '10', '9']:
        (tmp_path / v).mkdir()
    for v in ['a', 'b', '9', '10']:
        for name in ['2.png', '10.PNG', '1.jpg', '3.bmp', '4.tif', '5.jpeg', '6.tiff']:
            (tmp_path / v / name).write_bytes(b'x')
        (tmp_path / v / 'notes.txt').write_text('x', encoding='utf-8')
        (tmp_path / v / '._0.png').write_bytes(b'x')  # macOS resource fork
    (tmp_path / '.hidden').mkdir()
    videos = list_videos(str(tmp_path))
    assert [n for n, _ in videos] == ['9', '10', 'a', 'b']
    names = [os.path.basename(p) for p in videos[0][1]]
    assert names == ['1.jpg', '2.png', '3.bmp', '4.tif', '5.jpeg', '6.tiff', '10.PNG']
    assert os.path.dirname(videos[0][1][0]) == os.path.join(str(tmp_path), '9')


def test_zero_padded_names_keep_plain_order(tmp_path):
    names = [f'{i:08d}.png' for i in (12, 3, 100, 0)]
    for n in names:
        _touch_png(tmp_path / n)
    (_, frames), = list_videos(tmp_path)
    got = [os.path.basename(p) for p in frames]
    assert got == sorted(names)


def test_root_with_frames_is_one_video(tmp_path):
    root = tmp_path / 'my clip é'
    root.mkdir()
    for i in range(3):
        _touch_png(root / f'{i}.png')
    videos = list_videos(root)
    assert len(videos) == 1
    assert videos[0][0] == 'my clip é'
    assert len(videos[0][1]) == 3
    assert list_videos(str(root) + os.sep)[0][0] == 'my clip é'


def test_list_videos_errors(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        list_videos(tmp_path / 'nope')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(UserError) as e:
        list_videos(empty)
    assert str(empty) in str(e.value)
    (empty / 'readme.txt').write_text('x', encoding='utf-8')
    with pytest.raises(UserError):
        list_videos(empty)

    root = tmp_path / 'root'
    (root / 'v1').mkdir(parents=True)
    (root / 'v2').mkdir()
    _touch_png(root / 'v1' / '0.png')
    with pytest.raises(UserError) as e:
        list_videos(root)
    assert str(root / 'v2') in str(e.value)

    f = tmp_path / 'file.png'
    _touch_png(f)
    with pytest.raises(UserError, match='not a folder'):
        list_videos(f)


def test_mixed_root_is_refused(tmp_path):
    (tmp_path / 'v').mkdir()
    _touch_png(tmp_path / 'v' / '0.png')
    _touch_png(tmp_path / '0.png')
    with pytest.raises(UserError, match='both'):
        list_videos(tmp_path)


# ---------------------------------------------------------------- read_frame

def test_read_public_frame(public_case):
    img = read_frame(public_case / 'LR' / '000' / '00000000.png')
    assert img.dtype == np.uint8 and img.shape == (32, 48, 3)
    np.testing.assert_array_equal(img, np.asarray(Image.open(public_case / 'LR' / '000' / '00000000.png')))


@pytest.mark.parametrize('ext', ['png', 'bmp', 'tif', 'jpg'])
def test_read_rgb_formats(tmp_path, rng, ext):
    a = rng.randint(0, 256, (9, 13, 3)).astype(np.uint8)
    p = tmp_path / f'f.{ext}'
    Image.fromarray(a).save(p)
    got = read_frame(p)
    assert got.shape == (9, 13, 3) and got.dtype == np.uint8
    if ext == 'jpg':  # lossy: compare with Pillow's own decode
        np.testing.assert_array_equal(got, np.asarray(Image.open(p).convert('RGB')))
    else:
        np.testing.assert_array_equal(got, a)


def test_read_grey_alpha_palette(tmp_path, rng):
    g = rng.randint(0, 256, (7, 5)).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / 'g.png')
    np.testing.assert_array_equal(read_frame(tmp_path / 'g.png'), np.repeat(g[:, :, None], 3, 2))

    rgba = rng.randint(0, 256, (7, 5, 4)).astype(np.uint8)
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    np.testing.assert_array_equal(read_frame(tmp_path / 'a.png'), rgba[:, :, :3])

    la = Image.fromarray(g).convert('LA')
    la.putalpha(Image.fromarray(rng.randint(0, 256, (7, 5)).astype(np.uint8)))
    la.save(tmp_path / 'la.png')
    np.testing.assert_array_equal(read_frame(tmp_path / 'la.png'), np.repeat(g[:, :, None], 3, 2))

    rgb = rng.randint(0, 256, (7, 5, 3)).astype(np.uint8)
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / 'p.png')
    np.testing.assert_array_equal(read_frame(tmp_path / 'p.png'), np.asarray(pal.convert('RGB')))

    pal.info['transparency'] = 0
    pal.save(tmp_path / 'pt.png', transparency=0)
    np.testing.assert_array_equal(read_frame(tmp_path / 'pt.png'), np.asarray(pal.convert('RGB')))

    Image.fromarray(g > 128).save(tmp_path / 'bw.png')
    np.testing.assert_array_equal(read_frame(tmp_path / 'bw.png')[:, :, 0], np.where(g > 128, 255, 0))


def test_test_writer_matches_pillow_on_8bit(tmp_path, rng):
    """Checks the writer above, so the 16-bit tests below are meaningful."""
    a = rng.randint(0, 256, (11, 17, 3)).astype(np.uint8)
    for interlace in (False, True):
        p = tmp_path / f'w{int(interlace)}.png'
        write_png(p, a, interlace=interlace)
        np.testing.assert_array_equal(np.asarray(Image.open(p)), a)


@pytest.mark.parametrize('channels', [1, 2, 3, 4])
@pytest.mark.parametrize('interlace', [False, True])
def test_read_16bit_png(tmp_path, rng, channels, interlace):
    shape = (13, 21) if channels == 1 else (13, 21, channels)
    a = rng.randint(0, 65536, shape).astype(np.uint16)
    a.flat[:4] = [0, 65535, 128, 129 + 257]  # around the rounding points
    p = tmp_path / 'x16.png'
    write_png(p, a, interlace=interlace, split_idat=True)
    got = read_frame(p)
    rgb = np.repeat(a[:, :, None], 3, 2) if channels == 1 else (
        np.repeat(a[:, :, :1], 3, 2) if channels == 2 else a[:, :, :3])
    np.testing.assert_array_equal(got, _round257(rgb))


@pytest.mark.parametrize('channels', [2, 3, 4])
def test_pillow_still_truncates_16bit_colour_png(tmp_path, channels):
    """Why data/images.py decodes 16-bit colour PNGs itself: Pillow (and imageio and
    scikit-image, which read PNG through it) keep only the high byte. If this fails,
    Pillow reads them and the decoder can go."""
    a = np.full((2, 3, channels), 257 * 7 + 200, np.uint16)
    write_png(tmp_path / 'c16.png', a)
    with Image.open(tmp_path / 'c16.png') as im:
        got = np.asarray(im)
    assert got.dtype == np.uint8 and (got[..., :3] == 7).all()


def test_16bit_rounds_not_truncates(tmp_path):
    a = np.array([[[511, 128, 129], [65535, 257 * 7 + 128, 257 * 7 + 129]]], np.uint16)
    write_png(tmp_path / 'r.png', a)
    np.testing.assert_array_equal(read_frame(tmp_path / 'r.png'), [[[2, 0, 1], [255, 7, 8]]])


def test_read_16bit_tiff(tmp_path, rng):
    import tifffile
    a = rng.randint(0, 65536, (6, 9, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / 'x.tif', a, photometric='rgb')
    np.testing.assert_array_equal(read_frame(tmp_path / 'x.tif'), _round257(a))
    tifffile.imwrite(tmp_path / 'be.tif', a, photometric='rgb', byteorder='>')
    np.testing.assert_array_equal(read_frame(tmp_path / 'be.tif'), _round257(a))
    g = rng.randint(0, 65536, (6, 9)).astype(np.uint16)
    tifffile.imwrite(tmp_path / 'g.tiff', g)
    np.testing.assert_array_equal(read_frame(tmp_path / 'g.tiff'), _round257(np.repeat(g[:, :, None], 3, 2)))
    planar = rng.randint(0, 256, (3, 6, 9)).astype(np.uint8)
    tifffile.imwrite(tmp_path / 'p.tif', planar, photometric='rgb', planarconfig='separate')
    np.testing.assert_array_equal(read_frame(tmp_path / 'p.tif'), planar.transpose(1, 2, 0))


def test_float_image_refused(tmp_path):
    import tifffile
    tifffile.imwrite(tmp_path / 'f.tif', np.zeros((4, 4, 3), np.float32), photometric='rgb')
    with pytest.raises(UserError, match='floating-point'):
        read_frame(tmp_path / 'f.tif')


def test_unreadable_files(tmp_path):
    bad = tmp_path / 'bad frame ü.png'
    bad.write_bytes(b'not an image at all')
    with pytest.raises(UserError) as e:
        read_frame(bad)
    assert str(e.value).startswith(f'{bad}: cannot read image (')

    good = tmp_path / 'good.png'
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(good)
    trunc = tmp_path / 'trunc.png'
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(UserError, match='cannot read image'):
        read_frame(trunc)

    p16 = tmp_path / 'p16.png'
    write_png(p16, np.zeros((8, 8, 3), np.uint16))
    t16 = tmp_path / 't16.png'
    t16.write_bytes(p16.read_bytes()[:60])
    with pytest.raises(UserError, match='cannot read image'):
        read_frame(t16)

    with pytest.raises(UserError, match='cannot read image'):
        read_frame(tmp_path / 'missing.png')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(UserError, match='cannot read image'):
        read_frame(tmp_path / 'empty.jpg')
    (tmp_path / 'bad.tif').write_bytes(b'II*\x00garbage')
    with pytest.raises(UserError, match='cannot read image'):
        read_frame(tmp_path / 'bad.tif')


# ---------------------------------------------------------------- window_indices

def test_windows_reference_table():
    assert window_indices(7, 5, border=True) == [
        [0, 1, 0, 1, 2], [1, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5],
        [2, 3, 4, 5, 6], [3, 4, 5, 6, 5], [4, 5, 6, 5, 6]]


def test_windows_match_upstream_metrics(public_case):
    with open(public_case / 'upstream_metrics.json', encoding='utf-8') as f:
        frames = json.load(f)['frames']
    for v, per_frame in frames.items():
        names = sorted(per_frame)
        windows = window_indices(len(names), 5, border=True)
        for k, t in enumerate(names):
            assert [names[i] for i in windows[k]] == per_frame[t]['window_frames'], (v, t)


@pytest.mark.parametrize('n_seq', [1, 3, 5, 7])
@pytest.mark.parametrize('n', range(1, 12))
def test_window_invariants(n, n_seq):
    half = n_seq // 2
    if n >= max(half, 1):
        ws = window_indices(n, n_seq, border=True)
        assert len(ws) == n
        assert all(len(w) == n_seq and w[half] == k for k, w in enumerate(ws))
        assert all(0 <= i < n for w in ws for i in w)
    else:
        with pytest.raises(UserError):
            window_indices(n, n_seq, border=True)
    if n >= n_seq:
        ws = window_indices(n, n_seq, border=False)
        assert len(ws) == n - 2 * half
        assert all(w == list(range(k, k + n_seq)) and w[half] == k + half for k, w in enumerate(ws))
    else:
        with pytest.raises(UserError):
            window_indices(n, n_seq, border=False)


def test_window_small_cases():
    assert window_indices(2, 5) == [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]]
    assert window_indices(7, 5, border=False) == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6]]
    with pytest.raises(UserError) as e:
        window_indices(1, 5, name='clipA')
    assert 'clipA' in str(e.value) and '1 frame' in str(e.value) and '2' in str(e.value)
    with pytest.raises(UserError) as e:
        window_indices(4, 5, border=False, name='clipB')
    assert 'clipB' in str(e.value) and '4 frame' in str(e.value) and '5' in str(e.value)
    with pytest.raises(UserError):
        window_indices(0, 5)
    with pytest.raises(ValueError):
        window_indices(7, 4)


# ---------------------------------------------------------------- tensors

def test_frames_to_input_bit_exact(public_case):
    raw = np.load(public_case / 'upstream_raw.npz')
    for v in ('000', '001'):
        (name, paths), = [x for x in list_videos(public_case / 'LR') if x[0] == v]
        frames = [read_frame(p) for p in paths]
        x = frames_to_input([frames[i] for i in window_indices(len(frames))[0]])
        ref = raw[f'{v}__input']
        assert x.dtype == np.float32 and x.shape == ref.shape == (1, 5, 3, 32, 48)
        assert x.flags.c_contiguous
        np.testing.assert_array_equal(x.view(np.uint32), ref.view(np.uint32))
    # division instead of the reciprocal product is not bit-exact (why we do it this way)
    div = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    assert not np.array_equal(div, frames_to_input(frames)[0])


def test_frames_to_input_checks():
    a = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(UserError):
        frames_to_input([a, np.zeros((4, 7, 3), np.uint8)])
    with pytest.raises(ValueError):
        frames_to_input([a.astype(np.float32)])
    with pytest.raises(ValueError):
        frames_to_input([])


def test_to_uint8_bit_exact(public_case):
    raw = np.load(public_case / 'upstream_raw.npz')
    for v in ('000', '001'):
        got = to_uint8(raw[f'{v}__recons'])
        ref = np.asarray(Image.open(public_case / 'upstream_sr' / v / '00000000.png'))
        assert got.dtype == np.uint8 and got.shape == (128, 192, 3)
        np.testing.assert_array_equal(got, ref)


def test_to_uint8_rounding_and_clamp():
    vals = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255, 1.0, 3.0, np.inf, -np.inf],
                    np.float32)
    x = np.zeros((1, 3, 1, vals.size), np.float32)
    x[0, :, 0] = vals
    got = to_uint8(x)[0, :, 0]
    expect = np.rint(np.clip(vals * np.float32(255), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(got, expect)
    assert got[0] == 0 and got[-4] == 255 and got[-2] == 255 and got[-1] == 0
    assert to_uint8(x[0]).shape == (1, vals.size, 3)
    with pytest.raises(ValueError):
        to_uint8(np.full((1, 3, 2, 2), np.nan, np.float32))
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 3, 2, 2), np.float32))


def test_crop_to_multiple():
    img = np.arange(10 * 13 * 3).reshape(10, 13, 3)
    out = crop_to_multiple(img, 4)
    assert out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out, img[:8, :12])
    assert crop_to_multiple(img, 1).shape == img.shape
    assert crop_to_multiple(img[..., 0], 5).shape == (10, 10)
    with pytest.raises(UserError):
        crop_to_multiple(img, 16)
    with pytest.raises(ValueError):
        crop_to_multiple(img, 0)
