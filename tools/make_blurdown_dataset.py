#!/usr/bin/env python3
"""Build a blurred-down x4 test set (HR + LR_blurdown_x4 + kernels) from HR videos.

    python tools/make_blurdown_dataset.py --hr_root dataset/REDS4/HR \\
        --save_root dataset/REDS4_BlurDown_Realistic --type realistic --seed 0

Writes ``<save_root>/HR/<video>/<frame>.png`` (the HR frames: PNG files are
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
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SUBDIRS = ('HR', 'LR_blurdown_x4', 'kernels')


def video_rng(seed, video):
    """The generator of a video's kernel: from the seed and the video's name only."""
    import numpy as np
    words = struct.unpack('<4I', hashlib.sha256(video.encode('utf-8')).digest()[:16])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *words])))


def make_kernel(kind, seed, video, scale=4):
    from jittor_sbvsr.data import kernels
    if kind == 'gaussian':
        sigma = kernels.TEST_GAUSSIAN_SIGMA
        return kernels.gaussian_kernel(kernels.gaussian_kernel_size(sigma), sigma)
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
    import numpy as np

    from jittor_sbvsr.data import kernels
    from jittor_sbvsr.data.degrade import blur_down_uint8
    from jittor_sbvsr.data.folders import frames_by_name, list_videos, stem
    from jittor_sbvsr.data.images import read_frame
    from jittor_sbvsr.errors import UserError
    from jittor_sbvsr.utils import Bar, ensure_dir, save_npy_atomic, save_png_atomic

    videos = list_videos(hr_root)            # checks hr_root exists and has frames
    if os.path.exists(save_root) and not os.path.isdir(save_root):
        raise UserError(f'{save_root}: exists and is not a folder')
    copy_hr = not _same_dir(hr_root, os.path.join(save_root, 'HR'))
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
                save_npy_atomic(os.path.join(stage, 'kernels', f'{name}.npy'), applied)
                save_png_atomic(os.path.join(stage, 'kernels', f'{name}.png'),
                                kernels.kernel_image(applied))
                for path in frames:
                    frame = stem(path)
                    hr = read_frame(path)
                    if hr.shape[0] % scale or hr.shape[1] % scale:
                        raise UserError(f'{path}: frame is {hr.shape[0]}x{hr.shape[1]}, not a multiple '
                                        f'of the scale {scale}; crop the HR frames first')
                    lr = blur_down_uint8(hr, kernel, scale)
                    save_png_atomic(os.path.join(stage, 'LR_blurdown_x4', name, f'{frame}.png'), lr)
                    if copy_hr:
                        dst = os.path.join(stage, 'HR', name, f'{frame}.png')
                        if path.lower().endswith('.png'):
                            ensure_dir(os.path.dirname(dst))
                            shutil.copyfile(path, dst)
                        else:
                            save_png_atomic(dst, hr)
                    bar.update(1, f'video={name}')
        # everything is built: move it into place, one video folder at a time
        for sub in SUBDIRS:
            if sub == 'HR' and not copy_hr:
                continue
            ensure_dir(os.path.join(save_root, sub))
        for name, _ in videos:
            for sub in ('LR_blurdown_x4', 'HR'):
                if sub == 'HR' and not copy_hr:
                    continue
                _replace_dir(os.path.join(stage, sub, name), os.path.join(save_root, sub, name))
            for ext in ('npy', 'png'):
                os.replace(os.path.join(stage, 'kernels', f'{name}.{ext}'),
                           os.path.join(save_root, 'kernels', f'{name}.{ext}'))
            done.append(name)
    except OSError as e:
        raise UserError(f'{save_root}: cannot write ({e.strerror or e})') from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created_root and not done:
            shutil.rmtree(save_root, ignore_errors=True)
    log(f'{len(videos)} video(s), {n_total} frame(s), {kind} kernel -> {save_root}')


def main(argv=None):
    from jittor_sbvsr.cli import guarded
    from jittor_sbvsr.cli.parser import Parser, checked

    def work():
        ap = Parser(description='Blur and x4-downsample HR videos into a paired test set '
                                '(HR, LR_blurdown_x4, kernels), as the Self-Blind-VSR test sets.')
        ap.add_argument('--hr_root', required=True, help='folder with one sub-folder of HR frames per video')
        ap.add_argument('--save_root', required=True, help='output folder')
        ap.add_argument('--type', dest='kind', required=True, choices=('gaussian', 'realistic'),
                        type=str.lower, help='kernel type')
        ap.add_argument('--seed', type=checked(int, lambda v: v >= 0, '>= 0'), default=0,
                        help='seed of the realistic kernels (default 0); unused for gaussian')
        args = ap.parse_args(argv)
        build(args.hr_root, args.save_root, args.kind, args.seed)
    return guarded(work)


if __name__ == '__main__':
    from jittor_sbvsr_launcher import launch  # an unusable installation: one line, not a traceback
    sys.exit(launch(main))
