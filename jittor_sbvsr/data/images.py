"""Video frames on disk -> model input windows, and model output -> uint8 frames.

Everything here follows the reference inference protocol bit for bit
(docs/porting.md, trap 14): how frames are ordered and windowed, how
pixels become float32 and how the float32 output becomes uint8.
One file, because that protocol is one thing to check against the reference.
"""
import logging
import os
import re
import struct
import zlib

import numpy as np
from PIL import Image

from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'list_videos', 'frames_by_name', 'pair_frames', 'check_gt_size', 'read_frame',
           'window_indices', 'frames_to_input', 'to_uint8', 'crop_to_multiple']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

# float32(1/255): the reference multiplies by this; dividing by 255 differs by 1 ulp.
_INV255 = np.float32(1.0 / 255.0)
_F255 = np.float32(255.0)


# ---------------------------------------------------------------- listing

def _natural_key(name):
    """Digits compare as numbers, so 2.png precedes 10.png.

    For equal-width zero-padded names this is the plain name order that the
    reference uses.
    """
    parts = re.split(r'(\d+)', name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _is_image(entry):
    return (entry.is_file() and not entry.name.startswith('.')
            and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)


def _scan(path):
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as e:
        raise UserError(f'{path}: cannot list folder ({e.strerror or e})') from None


def _images_in(path):
    names = sorted((e.name for e in _scan(path) if _is_image(e)), key=_natural_key)
    return [os.path.join(path, n) for n in names]


def list_videos(root, what='input folder'):
    """``[(name, [frame paths])]``: one video per sub-folder of ``root``, by name.

    A ``root`` that holds frames directly (and no sub-folders) is one video
    named after the folder. Hidden files and folders are ignored. ``what``
    names ``root`` in errors (e.g. 'ground-truth folder (--gt_path)').
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise UserError(f'{root}: {what} does not exist')
    if not os.path.isdir(root):
        raise UserError(f'{root}: {what} is not a folder')
    entries = _scan(root)
    subdirs = sorted((e.name for e in entries if e.is_dir() and not e.name.startswith('.')),
                     key=_natural_key)
    direct = [e for e in entries if _is_image(e)]
    if not subdirs:
        if not direct:
            raise UserError(f'{root}: {what} has no video sub-folders and no image frames '
                            f'({", ".join(IMAGE_EXTENSIONS)})')
        name = os.path.basename(os.path.normpath(os.path.abspath(root)))
        return [(name, _images_in(root))]
    if direct:
        raise UserError(f'{root}: holds both image files and sub-folders; put the frames '
                        'of each video in its own sub-folder')
    videos = []
    for name in subdirs:
        path = os.path.join(root, name)
        frames = _images_in(path)
        if not frames:
            raise UserError(f'{path}: video folder has no image frames '
                            f'({", ".join(IMAGE_EXTENSIONS)})')
        videos.append((name, frames))
    return videos


# ---------------------------------------------------------------- pairing

def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def frames_by_name(paths, folder):
    """{name without extension: path}; two frames of one name (a.png, a.jpg) are an error:
    their outputs, and their ground truth, would be the same file."""
    out = {}
    for p in paths:
        if _stem(p) in out:
            raise UserError(f'{p}: two frames named {_stem(p)} in {folder} '
                            f'({os.path.basename(out[_stem(p)])} too); each frame needs its own name')
        out[_stem(p)] = p
    return out


def _names(stems):
    stems = sorted(stems, key=_natural_key)
    return ', '.join(stems[:4]) + (f', ... (+{len(stems) - 4} more)' if len(stems) > 4 else '')


def pair_frames(lr_paths, gt_paths, lr_dir, gt_dir):
    """``([(lr, gt)], warning or None)``: each LR frame with its ground truth, by file name.

    Names are compared without the extension (``00000001.png`` pairs with
    ``00000001.jpg``); ground-truth frames with no LR frame are left out.
    When no name matches at all but the counts do, frames pair by position
    in name order and the warning says so (check it: the metrics depend on
    it). Any other mismatch is an error naming the frames. The trainer's
    test set and the inference CLI both pair this way.
    """
    lr = frames_by_name(lr_paths, lr_dir)
    gt = frames_by_name(gt_paths, gt_dir)
    if all(s in gt for s in lr):
        return [(p, gt[s]) for s, p in lr.items()], None
    if not set(lr) & set(gt) and len(lr) == len(gt):
        pairs = list(zip(lr_paths, gt_paths))
        shown = [f'{os.path.basename(a)} <-> {os.path.basename(b)}' for a, b in pairs]
        if len(shown) > 3:
            shown = shown[:2] + ['...'] + shown[-1:]
        return pairs, (f'warning: {gt_dir}: no ground-truth frame has the name of an LR frame in {lr_dir}; '
                       f'paired the {len(pairs)} frames by position in name order ({", ".join(shown)}): '
                       'the metrics are only right if that order is the same')
    missing = [s for s in lr if s not in gt]
    raise UserError(f'{gt_dir}: {len(lr)} LR frames but {len(gt)} ground-truth frames, and '
                    f'{len(missing)} LR frame(s) in {lr_dir} have no ground truth of the same name '
                    f'({_names(missing)}); give the ground truth the LR frames\' file names')


def check_gt_size(lr_shape, gt_shape, scale, lr_path, gt_path):
    """A ground-truth frame must be exactly ``scale`` x its LR frame: anything else
    (a crop, another scale) makes PSNR/SSIM meaningless, so it is an error."""
    want = (lr_shape[0] * scale, lr_shape[1] * scale)
    if tuple(gt_shape[:2]) != want:
        raise UserError(f'{gt_path}: ground truth is {gt_shape[0]}x{gt_shape[1]}, but LR frame '
                        f'{os.path.basename(lr_path)} is {lr_shape[0]}x{lr_shape[1]} and x{scale} makes '
                        f'{want[0]}x{want[1]}; the ground truth must be exactly the LR size x scale')


# ---------------------------------------------------------------- reading

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
          (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # x0, y0, dx, dy per pass


class _Corrupt(Exception):
    """Internal: a file that does not decode; reported as a UserError."""


def _png_header(path):
    """(width, height, bit depth, colour type, interlace) of a PNG, else None."""
    with open(path, 'rb') as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
    return struct.unpack('>IIBBBBB', head[16:29])[:4] + (head[28],)


def _unfilter(data, pos, rows, stride, bpp):
    """Undo PNG scan-line filters for one (sub-)image; returns (bytes [rows, stride], pos)."""
    out = np.zeros((rows, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(rows):
        if pos + 1 + stride > len(data):
            raise _Corrupt('image data is truncated')
        ftype = data[pos]
        line = np.frombuffer(data, np.uint8, stride, pos + 1)
        pos += 1 + stride
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: running sum per byte position within a pixel, mod 256
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif ftype == 2:  # Up
            cur = line + prev
        elif ftype in (3, 4):  # Average / Paeth depend on the byte just decoded
            cur = bytearray(line.tobytes())
            up = prev.tobytes()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if ftype == 3:
                    cur[i] = (cur[i] + ((a + b) >> 1)) & 0xFF
                    continue
                c = up[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(cur), np.uint8)
        else:
            raise _Corrupt(f'unknown scan-line filter {ftype}')
        out[y] = cur
        prev = out[y]
    return out, pos


def _read_png16(path, width, height, ctype, interlace):
    """Decode a 16-bit colour PNG ourselves: Pillow keeps only the high byte.

    Only needed for colour types 2/4/6 at 16 bits; it is pure Python for the
    Average/Paeth filters, so slow for large frames, but exact.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    with open(path, 'rb') as f:
        raw = f.read()
    pos, idat = 8, []
    while pos + 8 <= len(raw):
        length, ctype_chunk = struct.unpack('>I4s', raw[pos:pos + 8])
        if ctype_chunk == b'IDAT':
            idat.append(raw[pos + 8:pos + 8 + length])
        elif ctype_chunk == b'IEND':
            break
        pos += 12 + length
    try:
        data = zlib.decompress(b''.join(idat))
    except zlib.error as e:
        raise _Corrupt(f'bad compressed data: {e}') from None
    bpp = 2 * channels
    img = np.zeros((height, width, channels), np.uint16)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    pos = 0
    for x0, y0, dx, dy in passes:
        pw = (width - x0 + dx - 1) // dx if width > x0 else 0
        ph = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pw == 0 or ph == 0:
            continue
        rows, pos = _unfilter(data, pos, ph, pw * bpp, bpp)
        img[y0::dy, x0::dx] = rows.view('>u2').reshape(ph, pw, channels)
    return img


def _read_tiff(path):
    """First page of a TIFF, channels last; tifffile keeps 16-bit samples intact."""
    import tifffile
    log = logging.getLogger('tifffile')
    level = log.level
    log.setLevel(logging.ERROR)  # its warnings about broken files would bypass our one-line error
    try:
        arr = np.asarray(tifffile.imread(path, key=0))
    finally:
        log.setLevel(level)
    if arr.size == 0:
        raise _Corrupt('no image data')
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar-separate RGB
    return arr


def _read_pillow(path):
    """Pixels via Pillow, reduced to L, RGB, RGBA or 16-bit grey; palette -> RGB(A)."""
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ('L', 'RGB', 'RGBA', 'LA', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
            pass
        elif mode in ('P', 'PA', 'RGBa', 'La'):
            im = im.convert('RGBA')
        elif mode == '1':
            im = im.convert('L')
        else:  # CMYK, YCbCr, LAB, HSV, ...
            im = im.convert('RGB')
        return np.asarray(im)


def _to_rgb8(arr, path):
    """Any decoded array -> uint8 HxWx3: grey replicated, alpha dropped, 16-bit scaled."""
    if arr.dtype.byteorder not in ('=', '|'):
        arr = arr.astype(arr.dtype.newbyteorder('='))  # e.g. big-endian 16-bit TIFF samples
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[:, :, :-1]  # drop alpha
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f'{path}: unsupported image layout {arr.shape}')
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype == np.uint16:
        # round(v / 257): v = 257k + r rounds up exactly when r >= 129; no ties exist.
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        raise UserError(f'{path}: floating-point images are not supported '
                        '(use 8- or 16-bit integer frames)')
    raise UserError(f'{path}: unsupported sample type {arr.dtype} '
                    '(use 8- or 16-bit integer frames)')


def read_frame(path):
    """A frame as uint8 HxWx3 RGB, whatever the file's colour type.

    16-bit files become 8-bit by round(value/257); 8-bit data is never
    rescaled. Float images are refused rather than guessed at.
    """
    path = os.fspath(path)
    try:
        if os.path.splitext(path)[1].lower() in ('.tif', '.tiff'):
            arr = _read_tiff(path)
        else:
            head = _png_header(path)
            if head is not None and head[2] == 16 and head[3] in (2, 4, 6):
                arr = _read_png16(path, *head[:2], head[3], head[4])
            else:
                arr = _read_pillow(path)
                if head is not None and head[2] == 16 and arr.dtype == np.int32:
                    arr = arr.astype(np.uint16)  # 16-bit grey given as Pillow mode 'I'
    except FileNotFoundError:
        raise UserError(f'{path}: cannot read image (file not found)') from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error,
            zlib.error, _Corrupt, Image.DecompressionBombError) as e:
        raise UserError(f'{path}: cannot read image ({type(e).__name__}: {e})') from None
    return _to_rgb8(arr, path)


# ---------------------------------------------------------------- windows

def window_indices(n_frames, n_seq=5, border=True, name=None):
    """Frame indices of each input window, in the reference's order.

    With ``border`` every frame gets a window: the index list is padded with
    its first ``n_seq//2`` and last ``n_seq//2`` entries *repeated in order*
    (not mirrored), and window k is ``padded[k:k+n_seq]``. Without ``border``
    only full windows are used. In both cases ``window[n_seq//2]`` is the
    index of the centre frame, i.e. of the output frame.
    """
    if not isinstance(n_seq, (int, np.integer)) or n_seq < 1 or n_seq % 2 == 0:
        raise ValueError(f'n_seq must be a positive odd number, got {n_seq}')
    half = n_seq // 2
    what = f'video {name}' if name is not None else 'video'
    idx = list(range(int(n_frames)))
    if border:
        # The padding needs `half` frames to copy; then every window is full.
        need = max(half, 1)
        if len(idx) < need:
            raise UserError(f'{what} has {len(idx)} frame(s); {n_seq}-frame windows with border '
                            f'padding need at least {need}')
        padded = idx[:half] + idx + idx[len(idx) - half:]
        return [padded[k:k + n_seq] for k in range(len(idx))]
    if len(idx) < n_seq:
        raise UserError(f'{what} has {len(idx)} frame(s); {n_seq}-frame windows without border '
                        f'padding need at least {n_seq}')
    return [idx[k:k + n_seq] for k in range(len(idx) - 2 * half)]


# ---------------------------------------------------------------- tensors

def frames_to_input(frames):
    """uint8 HxWx3 frames of one window -> float32 [1, T, 3, H, W] in [0, 1].

    Multiplies by float32(1/255) like the reference (bit-exact); x/255 is not.
    """
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError('a window needs at least one frame')
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UserError(f'frames of one window differ in size: {sorted(shapes)}')
    shape = frames[0].shape
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f'expected HxWx3 frames, got shape {shape}')
    if any(f.dtype != np.uint8 for f in frames):
        raise ValueError('expected uint8 frames')
    x = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray((x * _INV255)[None])


def to_uint8(recons):
    """float32 model output [1, 3, H, W] (or [3, H, W]) -> uint8 HxWx3.

    round(clamp(x*255, 0, 255)) with the product in float32 and ties to even,
    as the reference does.
    """
    x = np.asarray(recons)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f'expected a batch of one, got shape {x.shape}')
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f'expected [1, 3, H, W] or [3, H, W], got shape {x.shape}')
    y = x.astype(np.float32) * _F255
    if np.isnan(y).any():
        raise ValueError('model output contains NaN')
    y = np.rint(np.clip(y, np.float32(0), _F255))
    return np.ascontiguousarray(y.astype(np.uint8).transpose(1, 2, 0))


def crop_to_multiple(img, m):
    """Crop HxW[xC] at the bottom/right so both sides are multiples of ``m``."""
    img = np.asarray(img)
    if m < 1:
        raise ValueError(f'multiple must be >= 1, got {m}')
    h, w = img.shape[:2]
    h2, w2 = h - h % m, w - w % m
    if h2 == 0 or w2 == 0:
        raise UserError(f'frame {h}x{w} is smaller than the size multiple {m}')
    return img[:h2, :w2]
