"""Training and test sets of Self-Blind-VSR, as numpy.

Every set has ``__len__`` and ``get(index, rng) -> dict``; ``rng`` is a
``numpy.random.Generator`` (see :mod:`.loader`, which derives it from the
seed, the epoch and the index so that runs are reproducible).

Layouts (one sub-folder of frames per video, frames in name order):

* ``OnlineBlurDownTrainSet(dir_data)``: ``<dir_data>/HR/<video>/*.png``
  (``<dir_data>/GT`` is accepted when there is no ``HR``). The first
  ``n_frames_per_video`` frames of each video are used; a sample is a window
  of ``n_seq`` consecutive frames. The HR crop is ``patch_size * scale``
  pixels (``patch_size`` counts LR pixels: 160 -> 640x640 HR crops); one
  blur kernel per sample degrades all its frames.
* ``PairedTestSet(dir_data_test)``: ``<dir>/HR/<video>/*.png`` and
  ``<dir>/LR_blurdown_x4/<video>/*.png``, every window of ``n_seq``
  consecutive frames (no border padding; the output frame is the middle one).
* ``LROnlyTrainSet(dir_data)``: ``<dir_data>/<video>/*.png``, low-resolution
  footage with no HR at all, for self-supervised fine-tuning.

Pixel values: uint8 * float32(1/255) (the reference's rgb_range 1); the
synthesised LR of the online sets stays float (no rounding).
"""
import os

import numpy as np
from ..errors import UserError
from . import degrade, kernels, testsets
from .folders import check_gt_size, check_pairs, check_same_size, list_videos, pair_frames, require_folder, stem
from .images import image_size, read_frame
from .windows import INV255  # docs/porting.md, trap 14

__all__ = ['OnlineBlurDownTrainSet', 'PairedTestSet', 'LROnlyTrainSet', 'reference_repeat',
           'TRAIN_KINDS']

TRAIN_KINDS = ('gaussian', 'realistic')


def reference_repeat(n_windows, batch_size, test_every=1000):
    """The reference's dataset repeat: enough passes for ``test_every`` batches per epoch.

    ``max(test_every // max(n_windows // batch_size, 1), 1)``.
    """
    return max(int(test_every) // max(int(n_windows) // int(batch_size), 1), 1)


def _check_positive_int(name, value, odd=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if odd and value % 2 == 0:
        raise ValueError(f'{name} must be odd, got {value}')


def _read_stack(paths):
    """n frames -> uint8 [n, H, W, 3]; all frames must have one size."""
    frames = [read_frame(p) for p in paths]
    for p, f in zip(paths, frames):
        check_same_size(p, f.shape, paths[0], frames[0].shape)
    return np.stack(frames)


def _to_chw(x):
    """[T, H, W, C] float -> float32 [T, C, H, W] (contiguous)."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2))


def _u8_to_float(x):
    """uint8 [T, H, W, C] -> float32 [T, C, H, W] in [0, 1], times float32(1/255)."""
    return _to_chw(x.astype(np.float32) * INV255)


def _crop(stack, size, rng, threshold, centre):
    """Random size x size crop of [T, H, W, C]; flat crops of the centre frame are redrawn.

    The corner is drawn x first, then y, uniformly. Up to
    ``degrade.MAX_CROP_TRIES`` crops are drawn while the centre frame's
    ``edge_score`` is below ``threshold``; the last one is kept.
    """
    _, h, w, _ = stack.shape
    tries = 0
    while True:
        x0 = int(rng.integers(0, w - size + 1))
        y0 = int(rng.integers(0, h - size + 1))
        patch = stack[:, y0:y0 + size, x0:x0 + size]
        tries += 1
        if threshold is None or tries >= degrade.MAX_CROP_TRIES:
            return patch
        if degrade.edge_score(patch[centre]) >= threshold:
            return patch


def _patches(paths, size, rng, smooth_threshold, centre, augment, what):
    """The window's frames read, cropped to ``size`` x ``size`` (and augmented)."""
    x = _read_stack(paths)
    if x.shape[1] < size or x.shape[2] < size:
        raise UserError(f'{paths[0]}: frame is {x.shape[1]}x{x.shape[2]}, smaller than the '
                        f'{size}x{size} {what}')
    x = _crop(x, size, rng, smooth_threshold, centre)
    return degrade.augment(x, rng) if augment else x


class _WindowSet:
    """Videos of frame paths and the list of their ``n_seq``-frame windows."""

    def _init_windows(self, videos, n_seq, what):
        self.videos = videos              # [(name, [paths])]
        self.n_seq = n_seq
        self.windows = []                 # [(video index, first frame)]
        for vi, (name, frames) in enumerate(videos):
            if len(frames) < n_seq:
                raise UserError(f'{what}: video {name} has {len(frames)} frame(s); '
                                f'{n_seq}-frame windows need at least {n_seq}')
            self.windows.extend((vi, s) for s in range(len(frames) - n_seq + 1))

    @property
    def n_windows(self):
        return len(self.windows)

    def set_repeat(self, repeat):
        """Pass over the windows ``repeat`` times per epoch. The trainer's epoch length
        depends on the number of windows, known only once the set is built."""
        _check_positive_int('repeat', repeat)
        self.repeat = int(repeat)

    def window_paths(self, index):
        vi, s = self.windows[index % len(self.windows)]
        name, frames = self.videos[vi]
        return name, frames[s:s + self.n_seq]

    def window_name(self, index):
        name, paths = self.window_paths(index)
        return f'{name}/{stem(paths[self.n_seq // 2])}'

    def _check_index(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} samples')


def _limit(frames, n):
    return frames if n is None else frames[:n]


class OnlineBlurDownTrainSet(_WindowSet):
    """HR videos blurred and downsampled on the fly with random kernels.

    ``get`` returns ``{'lr': float32 [n_seq, 3, p, p], 'hr': float32
    [n_seq, 3, scale*p, scale*p], 'kernel': float32 [ksize, ksize],
    'sigma': float (Gaussian; NaN for realistic), 'name': 'video/frame'}``
    with ``p = patch_size``. Per sample, in this order of random draws: the
    HR crop (redrawn while flat, see :func:`_crop`), the flip/rotation
    (same for all frames), the kernel. Gaussian kernels (5x5 to 13x13) are
    zero-padded to ``ksize`` so that batches stack; the blur is unchanged.
    The reference's training loop never looks at the HR crop:
    ``with_hr=False`` leaves it out ('hr': None), which saves a 16x larger
    array per sample (and its trip from the loader's worker processes).
    """

    def __init__(self, dir_data, kind='gaussian', n_seq=5, patch_size=160, n_frames_per_video=50,
                 scale=4, repeat=1, ksize=13, augment=True, smooth_threshold=degrade.SMOOTH_THRESHOLD,
                 with_hr=True):
        if kind not in TRAIN_KINDS:
            raise UserError(f'unknown kernel type {kind!r} (use {" or ".join(TRAIN_KINDS)})')
        _check_positive_int('n_seq', n_seq, odd=True)
        _check_positive_int('patch_size', patch_size)
        _check_positive_int('scale', scale)
        _check_positive_int('repeat', repeat)
        _check_positive_int('ksize', ksize, odd=True)
        if n_frames_per_video is not None:
            _check_positive_int('n_frames_per_video', n_frames_per_video)
        if kind == 'gaussian':
            biggest = kernels.gaussian_kernel_size(max(kernels.GAUSSIAN_SIGMAS))
            if ksize < biggest:
                raise ValueError(f'ksize {ksize} is smaller than the largest Gaussian kernel ({biggest})')
        self.dir_data = os.fspath(dir_data)
        self.kind = kind
        self.patch_size = int(patch_size)
        self.scale = int(scale)
        self.repeat = int(repeat)
        self.ksize = int(ksize)
        self.augment = bool(augment)
        self.smooth_threshold = smooth_threshold
        self.with_hr = bool(with_hr)
        self.n_frames_per_video = n_frames_per_video
        self.dir_hr = self._hr_dir(self.dir_data)
        videos = [(n, _limit(f, n_frames_per_video)) for n, f in list_videos(self.dir_hr)]
        self._init_windows(videos, int(n_seq), self.dir_hr)
        hp = self.patch_size * self.scale
        for name, frames in videos:
            h, w = image_size(frames[0])
            if h < hp or w < hp:
                raise UserError(f'{frames[0]}: frame is {h}x{w}, smaller than the {hp}x{hp} HR crop '
                                f'(patch_size {self.patch_size} x scale {self.scale}); '
                                'lower --patch_size')

    @staticmethod
    def _hr_dir(dir_data):
        require_folder(dir_data, 'training data folder')
        for sub in ('HR', 'GT'):
            path = os.path.join(dir_data, sub)
            if os.path.isdir(path):
                return path
        raise UserError(f'{os.path.join(dir_data, "HR")}: no HR folder in the training data '
                        f'(expected {os.path.join(dir_data, "HR", "<video>", "<frame>.png")})')

    def __len__(self):
        return self.n_windows * self.repeat

    def draw_kernel(self, rng):
        """(kernel [ksize, ksize] float64, sigma or NaN) for one sample."""
        if self.kind == 'gaussian':
            k, sigma = kernels.random_gaussian_kernel(rng, return_sigma=True)
            return kernels.pad_kernel(k, self.ksize), float(sigma)
        return kernels.random_realistic_kernel(rng, ksize=self.ksize, scale=self.scale), float('nan')

    def get(self, index, rng):
        self._check_index(index)
        _, paths = self.window_paths(index)
        hr = _patches(paths, self.patch_size * self.scale, rng, self.smooth_threshold, self.n_seq // 2,
                      self.augment, 'HR crop')
        kernel, sigma = self.draw_kernel(rng)
        lr = degrade.blur_down_np(hr, kernel, self.scale)
        return {'lr': _to_chw(lr * INV255), 'hr': _u8_to_float(hr) if self.with_hr else None,
                'kernel': kernel.astype(np.float32), 'sigma': sigma,
                'name': self.window_name(index)}


class PairedTestSet(_WindowSet):
    """HR / LR_blurdown_x4 test videos, every ``n_seq``-frame window in order.

    ``get(index, rng=None)`` returns ``{'lr': float32 [n_seq, 3, h, w],
    'hr': float32 [n_seq, 3, scale*h, scale*w], 'kernel': float32 [k, k]
    from <dir>/kernels/<video>.npy or None, 'name': 'video/frame'}`` where
    frame is the middle frame of the window. Frames pair by name as in
    inference (folders.pair_frames; ``warnings`` holds the line to log when
    they pair by position), and every HR frame must be exactly ``scale`` x
    its LR frame (checked on all frames' headers here): a cropped or
    other-scale HR would make the PSNR meaningless.
    """

    def __init__(self, dir_data_test, n_seq=5, scale=4):
        _check_positive_int('n_seq', n_seq, odd=True)
        _check_positive_int('scale', scale)
        self.dir_data = os.fspath(dir_data_test)
        self.scale = int(scale)
        require_folder(self.dir_data, 'test data folder')
        self.dir_hr = os.path.join(self.dir_data, testsets.HR)
        self.dir_lr = os.path.join(self.dir_data, testsets.LR)
        for d in (self.dir_hr, self.dir_lr):
            if not os.path.isdir(d):
                raise UserError(f'{d}: missing; a test set needs {self.dir_hr} and {self.dir_lr} '
                                'with one sub-folder of frames per video')
        hr_videos = list_videos(self.dir_hr)
        lr_videos = dict(list_videos(self.dir_lr))
        hr_names = [n for n, _ in hr_videos]
        for name in hr_names:
            if name not in lr_videos:
                raise UserError(f'{os.path.join(self.dir_lr, name)}: missing; video {name} is in '
                                f'{self.dir_hr} but not in {self.dir_lr}')
        for name in lr_videos:
            if name not in hr_names:
                raise UserError(f'{os.path.join(self.dir_hr, name)}: missing; video {name} is in '
                                f'{self.dir_lr} but not in {self.dir_hr}')
        self.lr_frames = {}
        self.warnings = []  # lines for the log (frames paired by position, see folders.pair_frames)
        videos = []
        for name, hr_frames in hr_videos:
            pairs, warning = pair_frames(lr_videos[name], hr_frames, os.path.join(self.dir_lr, name),
                                         os.path.join(self.dir_hr, name))
            if warning:
                self.warnings.append(warning)
            check_pairs(pairs, self.scale, image_size)
            self.lr_frames[name] = [lr for lr, _ in pairs]
            videos.append((name, [hr for _, hr in pairs]))
        self._init_windows(videos, int(n_seq), self.dir_hr)
        self._kernels = {}

    def __len__(self):
        return self.n_windows

    def kernel(self, video):
        """The video's ground-truth kernel from ``<dir>/kernels/<video>.npy``, else None."""
        if video not in self._kernels:
            path = os.path.join(self.dir_data, testsets.KERNELS, f'{video}.npy')
            k = None
            if os.path.isfile(path):
                try:
                    k = np.load(path, allow_pickle=False).astype(np.float32)
                except (OSError, ValueError) as e:
                    raise UserError(f'{path}: cannot read kernel ({e})') from None
                if k.ndim != 2:
                    raise UserError(f'{path}: kernel must be 2-D, got shape {k.shape}')
            self._kernels[video] = k
        return self._kernels[video]

    def get(self, index, rng=None):
        self._check_index(index)
        vi, s = self.windows[index]
        name, hr_paths = self.videos[vi]
        lr_paths = self.lr_frames[name][s:s + self.n_seq]
        hr_paths = hr_paths[s:s + self.n_seq]
        lr = _read_stack(lr_paths)
        hr = _read_stack(hr_paths)
        check_gt_size(lr.shape[1:3], hr.shape[1:3], self.scale, lr_paths[0], hr_paths[0])
        return {'lr': _u8_to_float(lr), 'hr': _u8_to_float(hr), 'kernel': self.kernel(name),
                'name': self.window_name(index)}


class LROnlyTrainSet(_WindowSet):
    """Low-resolution videos alone, for self-supervised fine-tuning on real footage.

    The method's losses only compare the LR input with re-degraded versions
    of itself, so no HR is needed. ``get`` returns ``{'lr': float32
    [n_seq, 3, p, p], 'hr': None, 'kernel': None, 'name': 'video/frame'}``:
    a random ``n_seq``-frame window, a random ``patch_size`` x ``patch_size``
    crop (LR pixels, i.e. the model's training input size; flat crops are
    redrawn with the same rule as for HR crops, applied to the LR centre
    frame) and the same flip/rotation for all frames.
    ``n_frames_per_video=None`` uses every frame.
    """

    def __init__(self, dir_data, n_seq=5, patch_size=160, n_frames_per_video=50, repeat=1,
                 augment=True, smooth_threshold=degrade.SMOOTH_THRESHOLD):
        _check_positive_int('n_seq', n_seq, odd=True)
        _check_positive_int('patch_size', patch_size)
        _check_positive_int('repeat', repeat)
        if n_frames_per_video is not None:
            _check_positive_int('n_frames_per_video', n_frames_per_video)
        self.dir_data = os.fspath(dir_data)
        self.patch_size = int(patch_size)
        self.repeat = int(repeat)
        self.augment = bool(augment)
        self.smooth_threshold = smooth_threshold
        videos = [(n, _limit(f, n_frames_per_video)) for n, f in list_videos(self.dir_data)]
        self._init_windows(videos, int(n_seq), self.dir_data)
        p = self.patch_size
        for name, frames in videos:
            h, w = image_size(frames[0])
            if h < p or w < p:
                raise UserError(f'{frames[0]}: frame is {h}x{w}, smaller than the {p}x{p} patch; '
                                'lower --patch_size')

    def __len__(self):
        return self.n_windows * self.repeat

    def get(self, index, rng):
        self._check_index(index)
        _, paths = self.window_paths(index)
        lr = _patches(paths, self.patch_size, rng, self.smooth_threshold, self.n_seq // 2, self.augment,
                      'patch')
        return {'lr': _u8_to_float(lr), 'hr': None, 'kernel': None,
                'name': self.window_name(index)}
