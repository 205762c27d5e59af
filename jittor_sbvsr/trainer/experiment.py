"""The experiment folder, ``<experiment_dir>/<save>/``: opened once, written after each epoch.

Rank 0 alone writes here. Every file is written atomically, and the
training state goes last: it is the commit point of ``--resume``
(:mod:`.state`), so a crash leaves the previous epoch or the new one, never
a mix.
"""
import datetime
import json
import os

import numpy as np

from ..errors import UserError
from ..weights.checkpoint import save_state_atomic
from ..utils import Logger, atomic_write_bytes, ensure_dir
from ..utils.files import remove_stale_temps, stale_note
from .evaluate import PSNR_NAMES
from .losses import LOSS_NAMES
from .plots import save_line_plot
from .state import STATE_NAME, epoch_seed, save_training_state

__all__ = ['open_experiment', 'save_epoch']


def open_experiment(folder, args, start_epoch, stream, notes):
    """Create (or archive and recreate) ``folder``, note stale temp files, append the run's
    options to config.txt; returns the Logger of log.txt, with ``notes`` written first."""
    if not args.resume and not args.test_only and os.path.isdir(folder) and os.listdir(folder):
        stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
        archived = f'{folder}_archived_{stamp}'
        try:
            os.rename(folder, archived)
        except OSError as e:
            raise UserError(f'{folder}: exists and cannot be archived ({e.strerror or e})') from None
        notes.insert(0, f'Moved the previous experiment {folder} to {archived}')
    ensure_dir(os.path.join(folder, 'model'))
    note = stale_note(remove_stale_temps(folder, recursive=True))
    if note:
        notes.append(note)
    logger = Logger(os.path.join(folder, 'log.txt'), stream=stream)
    if not args.test_only:
        # appended per run, as the reference does (a resumed run adds its options)
        try:
            with open(os.path.join(folder, 'config.txt'), 'a', encoding='utf-8') as f:
                f.write(f'From epoch {start_epoch - 1}...\n\n'
                        + ''.join(f'{k}: {v}\n' for k, v in sorted(vars(args).items())) + '\n')
        except OSError as e:
            logger.close()
            raise UserError(f'{folder}/config.txt: cannot write ({e.strerror or e})') from None
    for m in notes:
        logger.log(m)
    return logger


def save_epoch(folder, epoch, is_best, trainer):
    """Model files first, history and curves, the training state (the commit point) last."""
    args, history = trainer.args, trainer.history
    mdir = os.path.join(folder, 'model')
    weights = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
    if args.save_middle_models:
        save_state_atomic(weights, os.path.join(mdir, f'model_{epoch}.pkl'))
    if is_best:
        save_state_atomic(weights, os.path.join(mdir, 'model_best.pkl'))
    save_state_atomic(weights, os.path.join(mdir, 'model_latest.pkl'))
    atomic_write_bytes(os.path.join(folder, 'history.json'), json.dumps(history, indent=1).encode('utf-8'))
    _plot(folder, history, trainer.bicubic)
    best = trainer.best
    meta = {'epoch': int(epoch), 'history': history, 'best': list(best) if best else None,
            'config': dict({k: v for k, v in vars(args).items()
                            if isinstance(v, (str, int, float, bool, type(None)))}, mpi_ranks=trainer.world),
            'rng': {'seed': int(args.seed), 'next_epoch_seed': epoch_seed(args.seed, epoch + 1)},
            'saved_at': datetime.datetime.now().isoformat(timespec='seconds')}
    save_training_state(os.path.join(folder, STATE_NAME), meta, weights, trainer.optimizer.state())


def _plot(folder, history, bicubic=None):
    """The loss and PSNR curves; ``bicubic``: the baseline's PSNR on the same test set, drawn
    as a flat reference line on the PSNR plot."""
    x = history['epoch']
    for k in LOSS_NAMES:
        save_line_plot(os.path.join(folder, f'loss_{k}.png'), {k: history[k]}, x=x,
                       title=f'training loss: {k}', ylabel='loss')
    if any(v is not None for v in history['psnr']):
        clean = {k: [np.nan if v is None else v for v in history[k]] for k in PSNR_NAMES}
        for k in PSNR_NAMES:
            ref = {'bicubic': [bicubic] * len(x)} if k == 'psnr' and bicubic is not None else {}
            save_line_plot(os.path.join(folder, f'{k}.png'), {k: clean[k], **ref}, x=x, title=f'test {k}',
                           ylabel='dB')
