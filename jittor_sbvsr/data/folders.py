"""Frame folders: videos listed (one sub-folder each, frames in name order), frames paired with
their ground truth by name, and the checks a pair must pass. Training's test set and
inference list and pair this way.
"""
import os
import re

from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'scan', 'list_videos', 'stem', 'require_folder', 'frames_by_name', 'pair_frames',
           'check_same_size', 'check_pairs', 'check_gt_size']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


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


def scan(path):
    """The entries of folder ``path``; a folder that cannot be listed is one line."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as e:
        raise UserError(f'{path}: cannot list folder ({e.strerror or e})') from None


def _images_in(path):
    names = sorted((e.name for e in scan(path) if _is_image(e)), key=_natural_key)
    return [os.path.join(path, n) for n in names]


def stem(path):
    """A frame's name: its file name without the extension (what frames pair by)."""
    return os.path.splitext(os.path.basename(path))[0]


def require_folder(path, what):
    """``path`` must be an existing folder; else one line naming it as ``what``."""
    if not os.path.isdir(path):
        raise UserError(f'{path}: {what} {"is not a folder" if os.path.exists(path) else "does not exist"}')


def list_videos(root, what='input folder'):
    """``[(name, [frame paths])]``: one video per sub-folder of ``root``, by name.

    A ``root`` that holds frames directly (and no sub-folders) is one video
    named after the folder. Hidden files and folders are ignored. ``what``
    names ``root`` in errors (e.g. 'ground-truth folder (--gt_path)').
    """
    root = os.fspath(root)
    require_folder(root, what)
    entries = scan(root)
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

def frames_by_name(paths, folder, kind='frame'):
    """{name without extension: path}; two frames (or videos: ``kind``) of one name (a.png, a.jpg)
    are an error: their outputs, and their ground truth, would be the same file."""
    out = {}
    for p in paths:
        if stem(p) in out:
            raise UserError(f'{p}: two {kind}s named {stem(p)} in {folder} '
                            f'({os.path.basename(out[stem(p)])} too); each {kind} needs its own name')
        out[stem(p)] = p
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


def check_same_size(path, size, first_path, first_size):
    """A frame of a video must have the size of the video's first frame."""
    if tuple(size[:2]) != tuple(first_size[:2]):
        raise UserError(f'{path}: frame is {size[0]}x{size[1]}, but {os.path.basename(first_path)} of the same '
                        f'video is {first_size[0]}x{first_size[1]}; the frames of a video must have one size')


def check_pairs(pairs, scale, size_of):
    """The LR size of one video's ``[(lr, gt)]`` frame pairs: every LR frame of one size, every
    ground-truth frame (None: none) exactly ``scale`` x it (``size_of(path)``: (h, w) of a frame)."""
    first = None
    for lr, gt in pairs:
        size = size_of(lr)
        first = first or size
        check_same_size(lr, size, pairs[0][0], first)
        if gt is not None:
            check_gt_size(size, size_of(gt), scale, lr, gt)
    return first


def check_gt_size(lr_shape, gt_shape, scale, lr_path, gt_path):
    """A ground-truth frame must be exactly ``scale`` x its LR frame: anything else
    (a crop, another scale) makes PSNR/SSIM meaningless, so it is an error."""
    want = (lr_shape[0] * scale, lr_shape[1] * scale)
    if tuple(gt_shape[:2]) != want:
        raise UserError(f'{gt_path}: ground truth is {gt_shape[0]}x{gt_shape[1]}, but LR frame '
                        f'{os.path.basename(lr_path)} is {lr_shape[0]}x{lr_shape[1]} and x{scale} makes '
                        f'{want[0]}x{want[1]}; the ground truth must be exactly the LR size x scale')
