"""Image files -> uint8 RGB frames (read_frame), whatever their colour type and bit depth.

16-bit colour PNGs are decoded here (_read_png16): Pillow 13.0.0, and imageio 2.38.1 and
scikit-image 0.26.0 (which read PNG through Pillow), return 16-bit RGB, grey+alpha and RGBA
PNGs, plain or Adam7-interlaced, as 8 bits, their high byte: truncated, where frames are
rounded (round(v/257)) everywhere else. 16-bit grey they read exactly, and Pillow decodes it.
tests/test_frames.py checks that Pillow still drops the low byte: when it stops, the decoder
can go.
"""
import logging
import os
import struct
import zlib

import numpy as np
from PIL import Image

from ..errors import UserError

__all__ = ['read_frame', 'image_size']


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


def image_size(path):
    """(height, width) of an image file, from its header (nothing decoded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise UserError(f'{path}: cannot read image (file not found)') from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f'{path}: cannot read image ({type(e).__name__}: {e})') from None
    return h, w


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
