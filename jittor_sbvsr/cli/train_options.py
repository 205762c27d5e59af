"""Command-line options of ``main.py`` (training): the reference's names and defaults.

A template (trainer/templates.py) sets a whole configuration; any flag given on
the command line overrides the template's value (``--template
Self_Blind_VSR_Gaussian --batch_size 2 --patch_size 64``). Default paths are
relative to :data:`jittor_sbvsr.paths.ROOT` (``dataset/...``,
``pretrain_models/...``, ``experiment/<save>``); paths given on the command
line are relative to the current folder, as usual.
"""
import argparse
import os

from ..errors import UserError
from ..paths import ROOT
from ..trainer.templates import PATH_OPTIONS, TEMPLATES, TRAIN_SETS
from ..utils.memory import size_arg
from .infer import add_tf32_flag
from .parser import Parser, checked

__all__ = ['build_parser', 'parse_args']

_positive_int = checked(int, lambda v: v >= 1, '>= 1')
_nonneg_int = checked(int, lambda v: v >= 0, '>= 0')
_positive_float = checked(float, lambda v: v > 0, '> 0')


def _accumulate(text):
    """--accumulate: a positive count, or 'auto' (trainer/micro.py chooses it from --max_memory)."""
    if text.strip().lower() == 'auto':
        return 'auto'
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'expected a positive integer or auto, got {text!r}') from None


def build_parser():
    p = Parser(description='Self-Blind-VSR self-supervised training (Jittor)',
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--template', default='Self_Blind_VSR_Gaussian',
                   help='configuration to start from: ' + ', '.join(TEMPLATES))

    g = p.add_argument_group('hardware')
    g.add_argument('--n_threads', type=_nonneg_int, default=4,
                   help='data-loading worker processes (0: load in the main process)')
    g.add_argument('--cpu', action='store_true', help='use the CPU even when CUDA is available')
    add_tf32_flag(g)
    g.add_argument('--n_GPUs', type=_positive_int, default=1, help='only 1: one device per process (several GPUs: one rank each under mpirun)')
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
    g.add_argument('--process', action='store_true', help='refused: frames are read on demand, never preloaded')
    g.add_argument('--scale', type=_positive_int, default=4, help='super-resolution scale')
    g.add_argument('--patch_size', type=_positive_int, default=160, help='training patch size in LR pixels')
    g.add_argument('--size_must_mode', type=_positive_int, default=1, help='only 1: training crops no frame')
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
    g.add_argument('--accumulate', type=_accumulate, default=1,
                   help='accumulate gradients over N batches per update (effective batch = batch_size x N); '
                        'auto: split each batch into the micro-batches that fit --max_memory (same update)')
    g.add_argument('--max_memory', type=size_arg, default=None,
                   help='memory a training step may use, e.g. 2G or 512M (--accumulate auto; default: '
                        'on CUDA the free device memory less a margin, on the CPU 75%% of the available RAM)')
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
    g.add_argument('--mid_loss_weight', type=float, default=1.0, help='only 1: the loss has no middle term to weigh')

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
    for key in PATH_OPTIONS:
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


# The reference's flags that would do nothing here: refused unless at their default.
_INERT = {
    'n_GPUs': (1, 'one device per process; for several GPUs run one rank per GPU under mpirun '
                  '(README, "Training on several GPUs or machines")'),
    'process': (False, 'preloading is not supported; frames are read on demand'),
    'size_must_mode': (1, 'training crops no frame, only 1 is supported (the inference flag of this name crops)'),
    'mid_loss_weight': (1.0, 'the loss has no middle term to weigh, only 1 is supported'),
}


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
    for name, (default, why) in _INERT.items():
        value = getattr(args, name)
        if value != default:
            raise UserError(f'--{name}{"" if value is True else f" {value}"}: {why}')
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
