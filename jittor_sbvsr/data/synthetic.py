"""Tiny deterministic demo videos made from photos that scikit-image ships.

``make_demo_videos(root)`` writes, for each video, ``n_frames`` HR frames
that pan across one photo (a few pixels per frame, a different direction
per video), and the matching blurred-down LR frames:

    root/HR/<video>/<frame>.png               HR frames (training and test layout)
    root/LR_blurdown_x4/<video>/<frame>.png   x4 blurred-down, rounded to uint8
    root/kernels/<video>.npy                  the kernel used for each video

so ``root`` is at once a training folder (``OnlineBlurDownTrainSet(root)``)
and a paired test folder (``PairedTestSet(root)``); ``root/LR_blurdown_x4``
alone is an LR-only folder. Everything depends only on the arguments.
"""
import os

import numpy as np
from PIL import Image

from ..utils.files import ensure_dir, save_npy_atomic, save_png_atomic
from . import degrade, kernels
from .testsets import layout

__all__ = ['make_demo_videos', 'DEMO_PHOTOS']

DEMO_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry')


def _photo(name):
    import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def _fit(photo, need_h, need_w):
    """Enlarge the photo (bicubic, Pillow) when it is smaller than the pan needs."""
    h, w = photo.shape[:2]
    f = max(need_h / h, need_w / w, 1.0)
    if f == 1.0:
        return photo
    size = (int(np.ceil(w * f)), int(np.ceil(h * f)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC))


def make_demo_videos(root, n_videos=2, n_frames=7, hr_size=(128, 192), seed=0, scale=4,
                     kernel='gaussian'):
    """Write ``n_videos`` demo clips under ``root``; returns a dict of the folders written.

    ``hr_size`` (rows, cols) should be a multiple of ``scale``. ``kernel`` is
    'gaussian' (sigma 1.2, like the Gaussian test sets) or 'realistic' (one
    random kernel per video, from ``seed``).
    """
    hh, hw = int(hr_size[0]), int(hr_size[1])
    if hh % scale or hw % scale:
        raise ValueError(f'hr_size {hr_size} must be a multiple of scale {scale}')
    if kernel not in ('gaussian', 'realistic'):
        raise ValueError(f"kernel must be 'gaussian' or 'realistic', got {kernel!r}")
    root = ensure_dir(root)
    dirs = layout(root)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDE70]))
    for v in range(n_videos):
        name = f'{v:03d}'
        photo_name = DEMO_PHOTOS[v % len(DEMO_PHOTOS)]
        # pan velocity in pixels per frame, never (0, 0)
        vy, vx = 0, 0
        while vy == 0 and vx == 0:
            vy, vx = (int(a) for a in rng.integers(-3, 4, size=2))
        span_y, span_x = abs(vy) * (n_frames - 1), abs(vx) * (n_frames - 1)
        photo = _fit(_photo(photo_name), hh + span_y, hw + span_x)
        ph, pw = photo.shape[:2]
        y0 = int(rng.integers(0, ph - hh - span_y + 1)) + (span_y if vy < 0 else 0)
        x0 = int(rng.integers(0, pw - hw - span_x + 1)) + (span_x if vx < 0 else 0)
        if kernel == 'gaussian':
            k = kernels.test_gaussian_kernel()
        else:
            k = kernels.random_realistic_kernel(rng, scale=scale)
        save_npy_atomic(os.path.join(dirs['kernels'], f'{name}.npy'), k.astype(np.float32))
        for t in range(n_frames):
            y, x = y0 + vy * t, x0 + vx * t
            hr = np.ascontiguousarray(photo[y:y + hh, x:x + hw])
            frame = f'{t:08d}.png'
            save_png_atomic(os.path.join(dirs['hr'], name, frame), hr)
            save_png_atomic(os.path.join(dirs['lr'], name, frame),
                            degrade.blur_down_uint8(hr, k, scale))
    return dirs
