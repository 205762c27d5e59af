"""A pickle reader that runs no code: only the globals on an allow-list resolve.

Shared by our weights files (weights/checkpoint.py: plain Python containers and
numpy arrays) and PyTorch checkpoints (weights/torch_pickle.py adds torch's tensor
rebuilds). Anything else the pickle names is refused with :class:`Forbidden`
before it can run: a weights file is data, never code.
"""
import pickle
from collections import OrderedDict

import numpy as np

__all__ = ['Forbidden', 'RestrictedUnpickler', 'COMMON_GLOBALS', 'numpy_globals', 'ArrayUnpickler']


class Forbidden(Exception):
    """The pickle names a global that is not allowed (its name is the message)."""


def _codecs_encode(text, encoding='utf-8', errors='strict'):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if str(encoding).lower().replace('_', '-') not in ('latin1', 'latin-1', 'iso-8859-1'):
        raise Forbidden(f'_codecs.encode with encoding {encoding!r}')
    return text.encode('latin-1', errors)


def _np_dtype(*args, **kwargs):
    return np.dtype(*args, **kwargs)


def _numpy_globals():
    """numpy array / scalar reconstruction, under numpy 1 and numpy 2 names."""
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    out = {}
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out[(mod, '_reconstruct')] = multiarray._reconstruct
        out[(mod, 'scalar')] = multiarray.scalar
    out[('numpy', 'ndarray')] = np.ndarray
    out[('numpy', 'dtype')] = _np_dtype
    for name in ('Float32DType', 'Float64DType', 'Float16DType', 'Int64DType',
                 'Int32DType', 'UInt8DType', 'BoolDType'):
        # numpy >= 1.25 may pickle dtypes by their DType class.
        cls = getattr(getattr(np, 'dtypes', None), name, None)
        if cls is not None:
            out[('numpy.dtypes', name)] = cls
    return out


NUMPY_GLOBALS = None


def numpy_globals():
    """The numpy allow-list, built on first use."""
    global NUMPY_GLOBALS
    if NUMPY_GLOBALS is None:
        NUMPY_GLOBALS = _numpy_globals()
    return NUMPY_GLOBALS


COMMON_GLOBALS = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('_codecs', 'encode'): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``allowed``; refuses everything else."""

    allowed = COMMON_GLOBALS

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise Forbidden(f'{module}.{name}') from None
        except TypeError:
            raise Forbidden(f'{module!r}.{name!r}') from None


class ArrayUnpickler(RestrictedUnpickler):
    """Containers and numpy arrays, nothing else: what our .pkl weights hold."""

    allowed = None

    def __init__(self, f):
        super().__init__(f)
        if ArrayUnpickler.allowed is None:
            ArrayUnpickler.allowed = {**COMMON_GLOBALS, **numpy_globals()}
