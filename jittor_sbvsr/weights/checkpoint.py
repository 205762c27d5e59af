"""Our checkpoint format and strict loading.

A checkpoint here is a pickle of ``{key: numpy.float32 array}`` (``.pkl``),
keyed exactly like the reference PyTorch ``state_dict``, so a published
``.pt`` converts by identity. ``load_state`` also takes a PyTorch file
directly (converted in memory, without torch).

Loading is strict on purpose: a wrong architecture must fail with the list
of missing / unexpected / mis-shaped keys, never load "mostly".
"""
import os
import pickle
from collections import OrderedDict

import numpy as np

from ..errors import UserError, read_error
from ..utils.files import atomic_save
from . import torch_pickle
from .safe_pickle import ArrayUnpickler, Forbidden

# PWC-Net weights (network-default.pytorch) are keyed relative to this module.
FLOW_PREFIX = 'flow_net.moduleNetwork.'

_LIST_MAX = 8


def _read_pkl(path):
    try:
        with open(path, 'rb') as f:
            obj = ArrayUnpickler(f).load()
    except Forbidden as e:
        raise UserError(f"{path}: refusing to load: the pickle asks for '{e}', which a "
                        'weights file never needs') from None
    except OSError as e:
        raise read_error(path, e, 'a weights file') from None
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ''
        raise UserError(f'{path}: not a readable weights file (truncated or corrupt: '
                        f'{type(e).__name__}{": " + msg if msg else ""})') from None
    if not isinstance(obj, dict) or not obj:
        raise UserError(f'{path}: not a weights file (expected a non-empty dict of arrays, '
                        f'found {type(obj).__name__})')
    return obj


def as_float32(state, path):
    """Float arrays become float32; anything else is an error naming the keys."""
    out = OrderedDict()
    bad = []
    for k, v in state.items():
        if not isinstance(k, str):
            raise UserError(f'{path}: key {k!r} is not a string')
        if isinstance(v, np.ndarray) and (v.dtype.kind == 'f'):
            out[k] = np.asarray(v, dtype=np.float32, order='C')
        else:
            desc = str(v.dtype) if isinstance(v, np.ndarray) else type(v).__name__
            bad.append(f'{k} ({desc})')
    if bad:
        raise UserError(f'{path}: {len(bad)} entries are not float tensors: {_abbrev(bad)}')
    return out


def load_state(path):
    """Read weights as ``{key: float32 array}`` from our .pkl or a PyTorch file.

    The format is sniffed from the content, not the extension.
    """
    path = os.fspath(path)
    if torch_pickle.is_torch_file(path):
        state = torch_pickle.load_torch_file(path)
    else:
        state = _read_pkl(path)
    return as_float32(state, path)


def _abbrev(items):
    items = list(items)
    shown = ', '.join(items[:_LIST_MAX])
    if len(items) > _LIST_MAX:
        shown += f', ... (+{len(items) - _LIST_MAX} more)'
    return shown


def _fmt_shape(shape):
    return '[' + ','.join(str(int(s)) for s in shape) + ']'


def expected_shapes(module):
    """``{key: shape tuple}`` of a Jittor module's state_dict."""
    return OrderedDict((k, tuple(int(s) for s in v.shape))
                       for k, v in module.state_dict().items())


def check_state(state, expected):
    """Return (missing, unexpected, misshaped) key lists; misshaped is (key, file, model)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [(k, tuple(np.shape(state[k])), tuple(expected[k]))
                 for k in expected if k in state
                 and tuple(np.shape(state[k])) != tuple(expected[k])]
    return missing, unexpected, misshaped


def validate_state(state, expected, path, what='the model'):
    """Raise one UserError listing every missing, unexpected or mis-shaped key."""
    missing, unexpected, misshaped = check_state(state, expected)
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing key{"s" * (len(missing) != 1)}: '
                     f'{_abbrev(missing)}')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key{"s" * (len(unexpected) != 1)}: '
                     f'{_abbrev(unexpected)}')
    if misshaped:
        parts.append(f'{len(misshaped)} mis-shaped key{"s" * (len(misshaped) != 1)}: '
                     + _abbrev(f'{k} (file {_fmt_shape(a)}, model {_fmt_shape(b)})'
                               for k, a, b in misshaped))
    raise UserError(f'{path}: weights do not match {what} '
                    f'({len(state)} tensors in the file, {len(expected)} expected): '
                    + '; '.join(parts))


def save_state_atomic(state, path):
    """Write ``{key: float32 array}`` to ``path`` atomically (utils/files.py).

    Either the complete new file is there afterwards or the old one is
    untouched; no temp file is left behind.
    """
    path = os.fspath(path)
    clean = OrderedDict()
    for k, v in state.items():
        if not isinstance(k, str):
            raise UserError(f'{path}: key {k!r} is not a string')
        clean[k] = np.asarray(v, dtype=np.float32, order='C')
    if os.path.isdir(path):
        raise UserError(f'{path}: is a directory, expected an output file name')

    def write(tmp):
        with open(tmp, 'wb') as f:
            pickle.dump(clean, f, protocol=4)
    atomic_save(path, write)


def check_finite(state, path):
    """NaN or infinite weights are a damaged (or diverged) checkpoint: say so, naming the keys."""
    bad = [k for k, v in state.items() if not np.isfinite(v).all()]
    if bad:
        raise UserError(f'{path}: {len(bad)} tensor{"s hold" if len(bad) != 1 else " holds"} NaN or infinite '
                        f'values ({_abbrev(bad)}): the checkpoint is damaged, or the training that '
                        'wrote it diverged')


def load_into_module(module, state, path):
    """Strictly load ``state`` into a Jittor module and check the values landed."""
    expected = expected_shapes(module)
    validate_state(state, expected, path)
    check_finite(state, path)
    module.load_parameters({k: np.asarray(v, dtype=np.float32, order='C')
                            for k, v in state.items()})
    now = module.state_dict()
    wrong = [k for k in expected
             if not np.array_equal(now[k].numpy(), np.asarray(state[k], dtype=np.float32))]
    if wrong:
        raise UserError(f'{path}: {len(wrong)} tensors did not load into the model: '
                        f'{_abbrev(wrong)}')


def model_arch(state, path, wanted=None, advice=''):
    """The architecture (arch.py) of a whole model's ``state``, checked: finite values, and the
    settings ``wanted`` ({setting: (flag, value or None)}) equal to the checkpoint's, else one
    error naming both (``advice``: what to do; a callable gets the conflicts)."""
    from .arch import conflict_error, conflicts, derive_arch
    arch = derive_arch(state, path)
    found = conflicts(arch, wanted or {})
    if found:
        raise conflict_error(path, found, advice(found) if callable(advice) else advice)
    check_finite(state, path)
    return arch


def read_model(path, wanted=None, advice='', flag='--model_path'):
    """(state, architecture) of the whole-model checkpoint at ``path`` (our .pkl or a PyTorch
    file; ``flag``: the one that named it), checked by :func:`model_arch`: the one loader of
    inference, training and the converter. numpy only: a wrong file is reported before Jittor
    starts."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f'{path}: is a folder; {flag} takes a weights file (.pkl or .pt)')
    if not os.path.isfile(path):
        raise UserError(f'{path}: model file not found ({flag})')
    state = load_state(path)
    return state, model_arch(state, path, wanted, advice)
