"""Command-line options of ``main.py`` (training): the reference's names and defaults.

A template sets a whole configuration; any flag given on the command line
overrides the template's value (``--template Self_Blind_VSR_Gaussian
--batch_size 2 --patch_size 64``). Default paths are relative to
:data:`ROOT` (``dataset/...``, ``pretrain_models/...``,
``experiment/<save>``); paths given on the command line are relative to the
current folder, as usual.
"""
import argparse
import os

from .errors import UserError

__all__ = ['ROOT', 'DEMO_DATA', 'TEMPLATES', 'build_parser', 'parse_args', 'project_root', 'template_names']


def project_root():
    """Where the default data, weights and results live: $SBVSR_ROOT if set; else the source
    checkout the package runs from (``pip install -e .`` or the scripts); else, for a package
    installed into site-packages (``pip install .``), the current folder: never site-packages."""
    if os.environ.get('SBVSR_ROOT'):
        return os.path.abspath(os.environ['SBVSR_ROOT'])
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, 'pyproject.toml')):
        return checkout
    return os.getcwd()


ROOT = project_root()
# The demo template's clips: written there on first use (and only there).
DEMO_DATA = os.path.join(ROOT, 'dataset', 'demo')

# The paper configuration shared by the reference's two templates.
_PAPER = dict(
    task='FlowVideoSR', model='PWC_Recons', HR_in=False, scale=4, patch_size=160, n_sequence=5,
    n_frames_per_video=50, n_feat=128, extra_RBS=3, recons_RBS=20, ksize=13, loss='1*L1',
    lr=1e-4, lr_decay=100, save_middle_models=True, save_images=False, epochs=500, batch_size=8,
    data_test='REDS_HRLR',
)

TEMPLATES = {
    'Self_Blind_VSR_Gaussian': dict(
        _PAPER, save='Self_Blind_VSR_Gaussian', data_train='REDS_BLURDOWN_GAUSSIAN',
        dir_data='dataset/REDS/train', dir_data_test='dataset/REDS4_BlurDown_Gaussian'),
    'Self_Blind_VSR_Realistic': dict(
        _PAPER, save='Self_Blind_VSR_Realistic', data_train='REDS_BLURDOWN_REALISTIC',
        dir_data='dataset/REDS/train', dir_data_test='dataset/REDS4_BlurDown_Realistic'),
    # Self-supervised fine-tuning of a trained model on LR footage alone
    # (no HR, no evaluation unless --dir_data_test names a paired test set).
    'Self_Blind_VSR_Finetune': dict(
        _PAPER, save='Self_Blind_VSR_Finetune', data_train='LR_ONLY', data_test='TEST',
        dir_data='dataset/LR_videos', dir_data_test='',
        pre_train='pretrain_models/self_blind_vsr_realistic.pt', lr=1e-5, epochs=20,
        save_middle_models=False, n_frames_per_video=0),
    # A few minutes on a CPU: tiny network, tiny patches, synthetic clips made
    # from scikit-image photos (written to dir_data when it does not exist).
    'Self_Blind_VSR_Demo': dict(
        _PAPER, save='Self_Blind_VSR_Demo', data_train='DEMO', data_test='DEMO',
        dir_data=DEMO_DATA, dir_data_test=DEMO_DATA, n_feat=16, extra_RBS=1, recons_RBS=2,
        patch_size=24, batch_size=2, epochs=3, test_every=4, n_frames_per_video=7, n_threads=0,
        save_middle_models=False, save_images=True, print_every=2),
}

# Options whose default is a path relative to the repository root.
_PATH_OPTIONS = ('dir_data', 'dir_data_test', 'pre_train', 'experiment_dir', 'pretrain_models_dir')

# data_train -> kind of training set
TRAIN_SETS = {
    'REDS_BLURDOWN_GAUSSIAN': 'gaussian',
    'REDS_BLURDOWN_REALISTIC': 'realistic',
    'DEMO': 'gaussian',
    'LR_ONLY': 'lr_only',
}


def template_names():
    return list(TEMPLATES)


def _checked(convert, ok, bound):
    """An argparse type: ``convert(text)``, which must satisfy ``ok`` (``bound`` says how)."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            kind = 'an integer' if convert is int else 'a number'
            raise argparse.ArgumentTypeError(f'expected {kind}, got {text!r}') from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f'must be {bound}, got {v}')
        return v
    return parse


_positive_int = _checked(int, lambda v: v >= 1, '>= 1')
_nonneg_int = _checked(int, lambda v: v >= 0, '>= 0')
_positive_float = _checked(float, lambda v: v > 0, '> 0')


class _Parser(argparse.ArgumentParser):
    """argparse that raises (one line) instead of printing usage and exiting."""

    def error(self, message):
        raise UserError(message)


def build_parser():
    p = _Parser(description='Self-Blind-VSR self-supervised training (Jittor)',
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--template', default='Self_Blind_VSR_Gaussian',
                   help='configuration to start from: ' + ', '.join(TEMPLATES))

    g = p.add_argument_group('hardware')
    g.add_argument('--n_threads', type=_nonneg_int, default=4,
                   help='data-loading worker processes (0: load in the main process)')
    g.add_argument('--cpu', action='store_true', help='use the CPU even when CUDA is available')
    g.add_argument('--n_GPUs', type=_positive_int, default=1, help='accepted for compatibility; one device is used')
    g.add_argument('--seed', type=_nonneg_int, default=1, help='random seed (data sampling, initial weights)')
    g.add_argument('--dist_timeout', type=float, default=1800.0,
                   help='under mpirun: stop when a rank makes no progress for this many seconds '
                        '(a peer died or hangs); 0: wait forever')

    g = p.add_argument_group('data')
    g.add_argument('--dir_data', default='dataset/REDS/train',
                   help='training data: <dir>/HR/<video>/*.png (or <dir>/<video>/*.png for LR_ONLY)')
    g.add_argument('--dir_data_test', default='dataset/REDS4_BlurDown_Gaussian',
                   help="test data: <dir>/HR and <dir>/LR_blurdown_x4 ('' for no evaluation)")
    g.add_argument('--data_train', default='REDS_BLURDOWN_GAUSSIAN',
                   help='training set: ' + ', '.join(TRAIN_SETS))
    g.add_argument('--data_test', default='REDS_HRLR', help='name of the test set (for the result folder)')
    g.add_argument('--process', action='store_true', help='accepted for compatibility (frames are read on demand)')
    g.add_argument('--scale', type=_positive_int, default=4, help='super-resolution scale')
    g.add_argument('--patch_size', type=_positive_int, default=160, help='training patch size in LR pixels')
    g.add_argument('--size_must_mode', type=_positive_int, default=1, help='accepted for compatibility')
    g.add_argument('--HR_in', action='store_true', help='bicubic-upsampled input (not supported in training)')
    g.add_argument('--rgb_range', type=_positive_int, default=1, help='maximum pixel value')
    g.add_argument('--n_colors', type=_positive_int, default=3, help='colour channels')
    g.add_argument('--no_augment', action='store_true', help='no random flips/rotations')
    g.add_argument('--n_sequence', type=_positive_int, default=5, help='frames per window')
    g.add_argument('--n_frames_per_video', type=_nonneg_int, default=50,
                   help='use the first N frames of each training video (0: all)')

    g = p.add_argument_group('model')
    g.add_argument('--model', default='PWC_Recons', help='model name (only PWC_Recons)')
    g.add_argument('--pre_train', default='.', help="full model weights to start from (.pkl or .pt; '.' for none)")
    g.add_argument('--n_feat', type=_positive_int, default=128, help='feature channels')
    g.add_argument('--extra_RBS', type=_nonneg_int, default=3, help='residual blocks per frame')
    g.add_argument('--recons_RBS', type=_nonneg_int, default=20, help='residual blocks after fusion')
    g.add_argument('--ksize', type=_positive_int, default=13, help='blur kernel size')

    g = p.add_argument_group('training')
    g.add_argument('--test_every', type=_positive_int, default=1000,
                   help='batches per epoch: the training set is repeated to about this many')
    g.add_argument('--epochs', type=_nonneg_int, default=500, help='epochs to train (0: no limit)')
    g.add_argument('--batch_size', type=_positive_int, default=16, help='batch size')
    g.add_argument('--accumulate', type=_positive_int, default=1,
                   help='accumulate gradients over N batches per update (effective batch = batch_size x N)')
    g.add_argument('--test_only', action='store_true', help='only evaluate (--pre_train, else model_best)')
    g.add_argument('--task', default='FlowVideoSR', help='task (only FlowVideoSR)')

    g = p.add_argument_group('optimisation')
    g.add_argument('--loss', default='1*L1', help='reconstruction loss (only 1*L1)')
    g.add_argument('--lr', type=_positive_float, default=1e-4, help='learning rate (the flow net uses 1e-6)')
    g.add_argument('--lr_decay', type=_positive_int, default=200, help='multiply the lr by --gamma every N epochs')
    g.add_argument('--gamma', type=_positive_float, default=0.5, help='lr decay factor')
    g.add_argument('--beta1', type=float, default=0.9, help='Adam beta1')
    g.add_argument('--beta2', type=float, default=0.999, help='Adam beta2')
    g.add_argument('--epsilon', type=_positive_float, default=1e-8, help='Adam epsilon')
    g.add_argument('--weight_decay', type=float, default=0.0, help='weight decay')
    g.add_argument('--mid_loss_weight', type=float, default=1.0, help='accepted for compatibility')

    g = p.add_argument_group('logging and checkpoints')
    g.add_argument('--experiment_dir', default='experiment', help='experiments are written to <this>/<save>')
    g.add_argument('--pretrain_models_dir', default='pretrain_models',
                   help='folder with the PWC-Net weights network-default.pkl or network-default.pytorch')
    g.add_argument('--save', default='default_save', help='experiment name')
    g.add_argument('--save_middle_models', action='store_true', help='also keep model_<epoch>.pkl')
    g.add_argument('--load', default='.', help="continue experiment NAME (same as --save NAME --resume)")
    g.add_argument('--resume', action='store_true', help='continue from the last completed epoch')
    g.add_argument('--print_every', type=_positive_int, default=100, help='log the running losses every N batches')
    g.add_argument('--save_images', action='store_true', default=True,
                   help='save test images and kernels every epoch (the templates turn it off)')
    g.add_argument('--no_save_images', dest='save_images', action='store_false',
                   help='do not save test images')
    return p


def _resolve(path):
    if path in ('', '.', None):
        return path
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def parse_args(argv=None):
    """Parse ``argv`` over the chosen template; returns an ``argparse.Namespace``.

    Raises :class:`UserError` for an unknown template or a bad flag.
    """
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.template not in TEMPLATES:
        raise UserError(f"unknown template '{first.template}' (known: {', '.join(TEMPLATES)})")
    template = dict(TEMPLATES[first.template])
    # template values (and the built-in defaults of path options) resolve
    # against the repository root; values typed on the command line do not
    defaults = {a.dest: a.default for a in parser._actions}
    for key in _PATH_OPTIONS:
        if key in template:
            template[key] = _resolve(template[key])
        elif key in defaults:
            template[key] = _resolve(defaults[key])
    parser.set_defaults(**template)
    args = parser.parse_args(argv)
    if args.load not in ('', '.'):
        args.save = args.load
        args.resume = True
    if args.n_frames_per_video == 0:
        args.n_frames_per_video = None
    _check(args)
    return args


def _check(args):
    if args.data_train.upper() not in TRAIN_SETS:
        raise UserError(f"unknown --data_train '{args.data_train}' (known: {', '.join(TRAIN_SETS)})")
    args.data_train = args.data_train.upper()
    if args.model != 'PWC_Recons':
        raise UserError(f"--model {args.model}: only PWC_Recons is available")
    if args.task != 'FlowVideoSR':
        raise UserError(f"--task {args.task}: only FlowVideoSR is available")
    if args.loss.replace(' ', '') not in ('1*L1', '1.0*L1'):
        raise UserError(f"--loss {args.loss}: only 1*L1 is available (the reference's)")
    if args.n_sequence != 5:
        raise UserError(f'--n_sequence {args.n_sequence}: the method needs 5 frames per window')
    if args.n_colors != 3:
        raise UserError(f'--n_colors {args.n_colors}: only RGB (3) is supported')
    if args.HR_in:
        raise UserError('--HR_in is not supported for training')
    if args.scale != 4:
        raise UserError(f'--scale {args.scale}: only x4 is supported')
    if args.ksize % 2 == 0:
        raise UserError(f'--ksize {args.ksize}: must be odd')
    if args.rgb_range != 1:
        raise UserError(f'--rgb_range {args.rgb_range}: only 1 is supported')
    if not 0 <= args.beta1 < 1 or not 0 <= args.beta2 < 1:
        raise UserError(f'Adam betas must lie in [0, 1), got {args.beta1}, {args.beta2}')
    if args.weight_decay < 0:
        raise UserError(f'--weight_decay must be >= 0, got {args.weight_decay}')
    if args.save in ('', '.') or os.sep in args.save or (os.altsep and os.altsep in args.save) \
            or args.save in ('..',):
        raise UserError(f"--save '{args.save}': must be a plain folder name")
