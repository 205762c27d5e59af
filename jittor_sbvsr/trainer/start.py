"""What a training run starts from: demo clips, data sets, initial weights, resume checks.

Everything here runs before the experiment folder is touched, so bad input
(a missing folder, a checkpoint of another architecture, a corrupt state)
is one ``UserError`` and no file changes. Lines meant for the log are
appended to ``notes``: the log file does not exist yet.
"""
import os

from ..errors import UserError
from ..weights.checkpoint import FLOW_PREFIX, load_into_module, load_state
from .templates import DEMO_DATA, TRAIN_SETS
from .. import dist
from .state import STATE_NAME

__all__ = ['check_resume_config', 'write_demo_data', 'make_train_set', 'make_test_set',
           'load_initial_weights']

# Options that must not change on --resume if the run is to continue as it was.
_SAME_ON_RESUME = ('n_feat', 'extra_RBS', 'recons_RBS', 'ksize', 'scale', 'n_sequence', 'seed',
                   'patch_size', 'batch_size', 'accumulate', 'data_train', 'test_every',
                   'n_frames_per_video', 'no_augment')
_PWC_NAMES = ('network-default.pkl', 'network-default.pytorch')


def _same_path(a, b):
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _unset(path):
    return path in ('', '.', None)


def check_resume_config(saved, args, world, notes):
    """Warn (not fail) when the resumed run's options differ from the saved ones: it can
    continue, but it will no longer repeat the uninterrupted run."""
    changed = [f'{k} {saved.get(k)!r} -> {getattr(args, k)!r}' for k in _SAME_ON_RESUME
               if k in saved and saved.get(k) != getattr(args, k)]
    if saved.get('mpi_ranks', 1) != world:
        changed.append(f"MPI ranks {saved.get('mpi_ranks', 1)} -> {world}")
    if changed:
        notes.append('warning: resuming with options that differ from the saved run ('
                     + ', '.join(changed) + '): the continued run will not repeat an '
                     'uninterrupted one')


def write_demo_data(args, notes):
    """The demo clips, written once (by rank 0) when the default demo folder is missing."""
    wanted = [(args.data_train, args.dir_data)] if not args.test_only else []
    wanted.append((args.data_test, args.dir_data_test))
    for name, folder in wanted:
        if name == 'DEMO' and folder and _same_path(folder, DEMO_DATA) and not os.path.exists(folder) \
                and dist.rank() == 0:
            from ..data.synthetic import make_demo_videos
            notes.append(f'Writing the demo clips to {folder}')
            make_demo_videos(folder)
    dist.barrier()


def make_train_set(args, effective_batch):
    """The training set of ``--data_train``, repeated to the reference's epoch length:
    ``test_every`` updates of ``effective_batch`` samples."""
    from ..data import datasets
    a = args
    kind = TRAIN_SETS[a.data_train]
    try:
        if kind == 'lr_only':
            ds = datasets.LROnlyTrainSet(a.dir_data, n_seq=a.n_sequence, patch_size=a.patch_size,
                                         n_frames_per_video=a.n_frames_per_video,
                                         augment=not a.no_augment)
        else:
            ds = datasets.OnlineBlurDownTrainSet(a.dir_data, kind=kind, n_seq=a.n_sequence,
                                                 patch_size=a.patch_size,
                                                 n_frames_per_video=a.n_frames_per_video,
                                                 scale=a.scale, ksize=a.ksize,
                                                 augment=not a.no_augment, with_hr=False)
        ds.set_repeat(datasets.reference_repeat(ds.n_windows, effective_batch, a.test_every))
    except ValueError as e:
        raise UserError(f'training data: {e}') from None
    if len(ds) == 0:
        raise UserError(f'{a.dir_data}: no training windows found')
    return ds


def make_test_set(args, notes):
    """The paired test set of ``--dir_data_test`` (None without one)."""
    from ..data import datasets
    if _unset(args.dir_data_test):
        if args.test_only:
            raise UserError('--test_only needs a test set (--dir_data_test)')
        return None
    ts = datasets.PairedTestSet(args.dir_data_test, n_seq=args.n_sequence, scale=args.scale)
    if len(ts) == 0:
        raise UserError(f'{args.dir_data_test}: no test windows found')
    notes.extend(ts.warnings)
    return ts


def load_initial_weights(model, args, exp_dir, resume, notes):
    """The first of: the resumed state, ``--pre_train``, model_best.pkl for ``--test_only``,
    PWC-Net's weights from ``--pretrain_models_dir``; else the random initial weights stay."""
    if resume is not None:
        path = os.path.join(exp_dir, STATE_NAME)
        load_into_module(model, resume[1], path)
        notes.append(f'Resuming from {path} (epoch {resume[0]["epoch"]} completed)')
    elif not _unset(args.pre_train):
        _load_full_model(model, args, args.pre_train, notes, '--pre_train')
    elif args.test_only:
        _load_full_model(model, args, os.path.join(exp_dir, 'model', 'model_best.pkl'), notes, '--test_only')
    else:
        _load_pwc(model, args.pretrain_models_dir, notes)


def _load_pwc(model, folder, notes):
    for name in _PWC_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            state = load_state(path)
            if state and all(k.startswith(FLOW_PREFIX) for k in state):
                state = {k[len(FLOW_PREFIX):]: v for k, v in state.items()}
            load_into_module(model.flow_net.moduleNetwork, state, path)
            notes.append(f'Loaded the PWC-Net weights from {path}')
            return
    notes.append(f'warning: no PWC-Net weights ({" or ".join(_PWC_NAMES)}) in '
                 f'{folder}: the flow net starts from random weights')


def _load_full_model(model, args, path, notes, flag):
    """Load a whole PWC_Recons checkpoint (weights/checkpoint.py:read_model); one that was made with
    other options says which."""
    from ..weights.checkpoint import read_model
    a = args

    def advice(found):
        fix = ' '.join(f'{f} {ckpt}' for _, ckpt, f, _ in found if f.startswith('--'))
        return f'pass {fix} to train from it' if fix else 'the trainer cannot build this architecture'
    state, _ = read_model(path, {
        'n_feat': ('--n_feat', a.n_feat), 'extra_RBS': ('--extra_RBS', a.extra_RBS),
        'recons_RBS': ('--recons_RBS', a.recons_RBS), 'ksize': ('--ksize', a.ksize),
        'scale': ('--scale', a.scale), 'n_sequence': ('--n_sequence', a.n_sequence),
        'n_colors': ('--n_colors', a.n_colors), 'kernel_size': ("the trainer's kernel_size", 3)}, advice, flag)
    load_into_module(model, state, path)
    notes.append(f'Loaded the model from {path}')
