"""The resumable training state: one self-contained file, written atomically.

``training_state.npz`` (an uncompressed numpy archive, read back without
pickle) holds everything a resumed run needs to continue exactly where an
uninterrupted one would be: the model weights, Adam's moments and step count,
the epoch (which fixes the lr schedule and the data of the next epoch), the
histories, the best PSNR so far and the configuration. It is the commit
point of an epoch: the trainer writes it last, after the model files, so a
crash at any moment leaves either the previous complete state or the new one.
The random generators need no saved state: each epoch re-seeds them from
(seed, epoch) alone (:func:`epoch_seed`).
"""
import json
import os
import zipfile

import numpy as np

from ..errors import UserError
from ..utils.files import atomic_save

__all__ = ['STATE_NAME', 'FORMAT', 'epoch_seed', 'save_training_state', 'load_training_state']

STATE_NAME = 'training_state.npz'
FORMAT = 'jittor-sbvsr-training-state'
VERSION = 1


def epoch_seed(seed, epoch):
    """The 31-bit seed of Jittor/numpy/python generators in ``epoch``: from (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x7EED]).generate_state(1)[0] & 0x7FFFFFFF)


def save_training_state(path, meta, model_state, optimizer_state):
    """``meta``: JSON-able dict; ``model_state``: {key: array}; ``optimizer_state``: TorchAdam.state()."""
    arrays = {}
    for k, v in model_state.items():
        arrays[f'model/{k}'] = np.asarray(v, np.float32)
    opt_meta = {k: v for k, v in optimizer_state.items() if k != 'groups'}
    opt_meta['groups'] = []
    for gi, g in enumerate(optimizer_state['groups']):
        opt_meta['groups'].append({'lr': g['lr'], 'initial_lr': g['initial_lr'], 'n': len(g['m'])})
        for i, (m, v) in enumerate(zip(g['m'], g['v'])):
            arrays[f'opt/{gi}/m/{i}'] = np.asarray(m, np.float32)
            arrays[f'opt/{gi}/v/{i}'] = np.asarray(v, np.float32)
    header = dict(meta, format=FORMAT, version=VERSION, optimizer=opt_meta,
                  model_keys=list(model_state))
    arrays['meta'] = np.frombuffer(json.dumps(header).encode('utf-8'), dtype=np.uint8)

    def write(tmp):
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
    return atomic_save(path, write)


def is_training_state(path):
    """True for a file :func:`save_training_state` wrote (a zip with the model under model/ and a
    meta entry), whatever its name: told apart from a model before it is read as one."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return 'meta.npy' in names and any(n.startswith('model/') for n in names)


def load_training_state(path):
    """Returns (meta, model_state, optimizer_state); a bad file is one UserError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f'{path}: no training state to resume from (train without --resume first)')
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if 'meta' not in names:
                raise ValueError('no meta entry')
            meta = json.loads(bytes(z['meta']).decode('utf-8'))
            if meta.get('format') != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}")
            if meta.get('version') != VERSION:
                raise ValueError(f"version {meta.get('version')!r}, expected {VERSION}")
            model = {k: z[f'model/{k}'] for k in meta['model_keys']}
            opt_meta = meta.pop('optimizer')
            groups = []
            for gi, g in enumerate(opt_meta['groups']):
                groups.append({'lr': g['lr'], 'initial_lr': g['initial_lr'],
                               'm': [z[f'opt/{gi}/m/{i}'] for i in range(g['n'])],
                               'v': [z[f'opt/{gi}/v/{i}'] for i in range(g['n'])]})
            optimizer = dict(opt_meta, groups=groups)
            for k in ('epoch', 'history', 'config'):
                if k not in meta:
                    raise ValueError(f'no {k!r} entry')
            arrays = list(model.values()) + [a for g in groups for a in g['m'] + g['v']]
            for a in arrays:
                if a.dtype != np.float32:
                    raise ValueError(f'an array is {a.dtype}, not float32')
                if not np.isfinite(a).all():
                    raise ValueError('it holds NaN or infinite values')
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f'{path}: no training state to resume from') from None
    except OSError as e:
        raise UserError(f'{path}: cannot read the training state ({e.strerror or e})') from None
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f'{path}: corrupt or truncated training state ({msg}); '
                        'nothing was changed') from None
    return meta, model, optimizer
