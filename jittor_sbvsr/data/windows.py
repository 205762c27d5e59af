"""Frames -> the model's input windows, and its output -> uint8 frames: the reference inference
protocol bit for bit (docs/porting.md, trap 14): how frames are windowed, how pixels become
float32 and how the float32 output becomes uint8. One file, because that protocol is one thing
to check against the reference.
"""
import numpy as np

from ..errors import UserError

__all__ = ['INV255', 'window_indices', 'frames_to_input', 'to_uint8', 'check_multiple', 'crop_to_multiple']

# float32(1/255): the reference multiplies by this; dividing by 255 differs by 1 ulp.
INV255 = np.float32(1.0 / 255.0)
_F255 = np.float32(255.0)


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
    return np.ascontiguousarray((x * INV255)[None])


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


def check_multiple(h, w, m, name='frame'):
    """An h x w frame (``name``: its file, for the error) must hold at least one ``m`` x ``m`` block."""
    if h < m or w < m:
        raise UserError(f'{name}: frame is {h}x{w}, smaller than the size multiple {m} (--size_must_mode)')


def crop_to_multiple(img, m, name='frame'):
    """Crop HxW[xC] at the bottom/right so both sides are multiples of ``m``."""
    img = np.asarray(img)
    if m < 1:
        raise ValueError(f'multiple must be >= 1, got {m}')
    h, w = img.shape[:2]
    check_multiple(h, w, m, name)
    return img[:h - h % m, :w - w % m]
