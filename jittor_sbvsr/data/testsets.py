"""The blurred-down x4 test sets: their layout, and how one is built from HR videos.

A test set (the paper's, ``tools/make_blurdown_dataset.py``'s, the demo clips of
synthetic.py) is ``<root>/HR/<video>/<frame>.png``, ``<root>/LR_blurdown_x4/<video>/
<frame>.png`` and ``<root>/kernels/<video>.npy``: :data:`HR`, :data:`LR`, :data:`KERNELS`.

:func:`build` writes ``<save_root>/HR/<video>/<frame>.png`` (the HR frames: PNG files are
copied, other formats re-encoded as PNG; skipped when --hr_root already is
``<save_root>/HR``), ``<save_root>/LR_blurdown_x4/<video>/<frame>.png`` and
``<save_root>/kernels/<video>.{npy,png}``.

Gaussian: one 9x9 kernel of sigma 1.2 for every video. Realistic: one random
13x13 anisotropic kernel per video, drawn from (--seed, video name), so the
same seed gives the same data set. LR = replicate-padded correlation with
the kernel, every 4th pixel from (0, 0), clamped and rounded to uint8.

All output is built in a hidden staging folder inside --save_root and moved
into place at the end, one video folder at a time: a failure (unreadable
frame, full disk, Ctrl-C) leaves no partial video behind. Errors are one
line ``error: ...`` and exit status 2.
"""
import hashlib
import os
import shutil
import struct
import tempfile

import numpy as np

from ..errors import UserError
from ..utils import Bar, ensure_dir, save_npy_atomic, save_png_atomic
from . import kernels
from .degrade import blur_down_uint8
from .folders import frames_by_name, list_videos, stem
from .images import read_frame

HR, LR, KERNELS = 'HR', 'LR_blurdown_x4', 'kernels'
SUBDIRS = (HR, LR, KERNELS)


def layout(root):
    """{'root', 'hr', 'lr', 'kernels'}: the folders of the test set at ``root``."""
    return {'root': root, 'hr': os.path.join(root, HR), 'lr': os.path.join(root, LR),
            'kernels': os.path.join(root, KERNELS)}


def video_rng(seed, video):
    """The generator of a video's kernel: from the seed and the video's name only."""
    words = struct.unpack('<4I', hashlib.sha256(video.encode('utf-8')).digest()[:16])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *words])))


def make_kernel(kind, seed, video, scale=4):
    """The kernel of one video: the test Gaussian, or a realistic one drawn from (seed, video)."""
    if kind == 'gaussian':
        return kernels.test_gaussian_kernel()
    return kernels.random_realistic_kernel(video_rng(seed, video), ksize=13, scale=scale)


def _same_dir(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _replace_dir(src, dst):
    """Move folder ``src`` onto ``dst``, replacing an existing ``dst``."""
    old = None
    if os.path.lexists(dst):
        old = tempfile.mkdtemp(prefix='.old-', dir=os.path.dirname(dst))
        os.rmdir(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)


def build(hr_root, save_root, kind, seed, scale=4, log=print):
    """Write the test set of the HR videos in ``hr_root`` into ``save_root`` (module docstring)."""
    videos = list_videos(hr_root)            # checks hr_root exists and has frames
    if os.path.exists(save_root) and not os.path.isdir(save_root):
        raise UserError(f'{save_root}: exists and is not a folder')
    copy_hr = not _same_dir(hr_root, os.path.join(save_root, HR))
    for name, frames in videos:
        frames_by_name(frames, os.path.join(hr_root, name))  # one output file per frame name
    created_root = not os.path.exists(save_root)
    ensure_dir(save_root)
    try:
        stage = tempfile.mkdtemp(prefix='.make-blurdown-', dir=save_root)
    except OSError as e:
        raise UserError(f'{save_root}: cannot write ({e.strerror or e})') from None
    n_total = sum(len(f) for _, f in videos)
    done = []
    try:
        with Bar(n_total, desc='blur-down', unit='frame') as bar:
            for name, frames in videos:
                kernel = make_kernel(kind, seed, name, scale)
                applied = kernel.astype(np.float32)
                save_npy_atomic(os.path.join(stage, KERNELS, f'{name}.npy'), applied)
                save_png_atomic(os.path.join(stage, KERNELS, f'{name}.png'),
                                kernels.kernel_image(applied))
                for path in frames:
                    frame = stem(path)
                    hr = read_frame(path)
                    if hr.shape[0] % scale or hr.shape[1] % scale:
                        raise UserError(f'{path}: frame is {hr.shape[0]}x{hr.shape[1]}, not a multiple '
                                        f'of the scale {scale}; crop the HR frames first')
                    lr = blur_down_uint8(hr, kernel, scale)
                    save_png_atomic(os.path.join(stage, LR, name, f'{frame}.png'), lr)
                    if copy_hr:
                        dst = os.path.join(stage, HR, name, f'{frame}.png')
                        if path.lower().endswith('.png'):
                            ensure_dir(os.path.dirname(dst))
                            shutil.copyfile(path, dst)
                        else:
                            save_png_atomic(dst, hr)
                    bar.update(1, f'video={name}')
        # everything is built: move it into place, one video folder at a time
        for sub in SUBDIRS:
            if sub == HR and not copy_hr:
                continue
            ensure_dir(os.path.join(save_root, sub))
        for name, _ in videos:
            for sub in (LR, HR):
                if sub == HR and not copy_hr:
                    continue
                _replace_dir(os.path.join(stage, sub, name), os.path.join(save_root, sub, name))
            for ext in ('npy', 'png'):
                os.replace(os.path.join(stage, KERNELS, f'{name}.{ext}'),
                           os.path.join(save_root, KERNELS, f'{name}.{ext}'))
            done.append(name)
    except OSError as e:
        raise UserError(f'{save_root}: cannot write ({e.strerror or e})') from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created_root and not done:
            shutil.rmtree(save_root, ignore_errors=True)
    log(f'{len(videos)} video(s), {n_total} frame(s), {kind} kernel -> {save_root}')
