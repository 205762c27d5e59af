"""Writing output files so that an interrupted run never leaves a half-written one.

Each file is written to a temporary name in the same folder (same file
system, so the final ``os.replace`` is atomic), flushed to the disk and
renamed into place. :func:`atomic_save` is the one writer every output file
of the package (images, kernels, checkpoints, training state) goes through.
"""
import os
import re
import secrets
import time

import numpy as np

from ..errors import UserError

__all__ = ['ensure_dir', 'atomic_save', 'atomic_write_bytes', 'save_png_atomic',
           'save_npy_atomic', 'temp_name', 'is_temp_name', 'remove_stale_temps', 'stale_note', 'retry_shared']

# what temp_name makes: .{name}.{8 hex digits}.tmp{the extension of name}
_TEMP = re.compile(r'\.(?P<name>.+)\.[0-9a-f]{8}\.tmp(?P<ext>\.[^.]*)?')


def ensure_dir(path):
    """Create ``path`` (and parents) if needed; returns it as a ``str``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise UserError(f'{path}: exists and is not a folder')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f'{path}: cannot create folder ({e.strerror or e})') from None
    return path


def temp_name(path):
    """Hidden sibling of ``path`` that keeps its extension, for writers that look at it."""
    folder, name = os.path.split(path)
    ext = os.path.splitext(name)[1]
    return os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp{ext}')


def is_temp_name(name):
    """True for a temporary name that :func:`atomic_save` makes (and nothing else)."""
    m = _TEMP.fullmatch(name)
    return bool(m) and os.path.splitext(m.group('name'))[1] == (m.group('ext') or '')


def remove_stale_temps(folder, recursive=False, of=None):
    """Delete the temporary files that interrupted atomic writes left in ``folder``.

    Only regular files named as :func:`atomic_save` names them (``of``: only
    those of that one file name); a run calls this on the folders it writes
    into before writing, so a temp there is a leftover (Ctrl-C removes its
    own; kill -9 or a power cut does not). Returns the paths removed.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    for dirpath, dirnames, files in os.walk(folder):
        if not recursive:
            dirnames[:] = []
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            if is_temp_name(f) and (of is None or _TEMP.fullmatch(f).group('name') == of) \
                    and os.path.isfile(p) and not os.path.islink(p):
                try:
                    os.unlink(p)
                    removed.append(p)
                except OSError:
                    pass
    return removed


def stale_note(removed):
    """The one line that tells the user which leftovers were removed (None if none)."""
    if not removed:
        return None
    names = ', '.join(os.path.basename(p) for p in removed[:3]) + (', ...' if len(removed) > 3 else '')
    where = os.path.commonpath([os.path.dirname(p) for p in removed])
    return (f'note: removed {len(removed)} temporary file(s) left in {where} by an interrupted '
            f'earlier run ({names})')


# Windows refuses to replace or remove a file that another process has open (an antivirus or the
# search indexer reading it, a killed run's host worker finishing its last frames): PermissionError
# ("Access is denied"), gone a moment later. About 10 s of waits, growing.
SHARING_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8) + (1.0,) * 8


def retry_shared(fn, *args):
    """``fn(*args)`` (os.replace, os.unlink), tried again after each of :data:`SHARING_WAITS` while it
    raises PermissionError; the last one is raised. Elsewhere such an error is rare (the temporary
    file was created in the same folder), and costs only the wait."""
    for wait in SHARING_WAITS:
        try:
            return fn(*args)
        except PermissionError:
            time.sleep(wait)  # host time
    return fn(*args)


def _mode_of(path):
    """An existing file's permission bits (kept when it is replaced), else None."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return None


def _fsync(path):
    """Flush a closed file's data to the disk (read-write: Windows needs write access)."""
    fd = os.open(path, os.O_RDWR | getattr(os, 'O_BINARY', 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(path, writer):
    """Call ``writer(tmp_path)`` and then move the temporary file onto ``path``.

    The temporary file is created empty beforehand (with the permissions a
    normal file would get, or those of the file it replaces), fsynced after
    ``writer`` has closed it (so a crash of the machine cannot leave the new
    name on an empty file), moved into place (retried while Windows says
    another process has ``path`` open: :func:`retry_shared`), and removed if
    anything fails, including Ctrl-C. OS errors become a :class:`UserError`
    naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        ensure_dir(folder)
    for _ in range(100):
        tmp = temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f'{path}: cannot write ({e.strerror or e})') from None
    else:
        raise UserError(f'{path}: cannot write (no free temporary name)')
    try:
        mode = _mode_of(path)
        if mode is not None:
            os.chmod(tmp, mode)
        writer(tmp)
        _fsync(tmp)
        retry_shared(os.replace, tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, PermissionError) and os.path.exists(path):
            raise UserError(f'{path}: cannot replace it ({e.strerror or e}): another program keeps it '
                            'open; close it (or wait for it) and run again') from None
        if isinstance(e, OSError):
            raise UserError(f'{path}: cannot write ({e.strerror or e})') from None
        raise
    return path


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    return atomic_save(path, write)


def save_png_atomic(path, img):
    """Save a uint8 HxW or HxWx3/4 image as PNG, whatever the extension of ``path``.

    zlib's run-length strategy after PNG's row filters: 3-5x faster than
    Pillow's default (level 6) on video frames, files about as small (within
    +-5%; bench/host_speed.py measures both), the same pixels.
    """
    import zlib
    from PIL import Image
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {img.dtype}')
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f'expected HxW, HxWx3 or HxWx4, got shape {img.shape}')
    pil = Image.fromarray(np.ascontiguousarray(img))
    return atomic_save(path, lambda tmp: pil.save(tmp, format='PNG', compress_type=zlib.Z_RLE))


def save_npy_atomic(path, arr):
    """``np.save`` to exactly ``path`` (no '.npy' appended), atomically."""
    arr = np.asarray(arr)

    def write(tmp):
        with open(tmp, 'wb') as f:
            np.save(f, arr, allow_pickle=False)
    return atomic_save(path, write)
