"""Read PyTorch checkpoints without PyTorch.

Users have the published ``.pt`` files (saved by torch 0.4.1 in the legacy
format) and may re-save them with a newer torch (zip format). Both are a
pickle whose tensors point at raw storages; we rebuild the tensors with numpy
only, so converting weights needs no torch installation.

Security: the pickle is read by a restricted unpickler that resolves only the
handful of globals a state_dict needs; anything else is refused before it can
run (a checkpoint is data, never code).

Views: a tensor is (storage, offset, shape, strides). Several tensors may share
one storage (legacy storages can even be views of other storages), so every
tensor is cut out of its storage buffer with numpy strides and then copied.

One file: both formats share the storage rebuild and the allow-list of torch
globals, and a reader of the security rules wants them in one place (the
restricted unpickler itself and the allow-lists shared with our own .pkl
files are in weights/safe_pickle.py).
"""
import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np

from ..errors import UserError, read_error
from .safe_pickle import COMMON_GLOBALS, Forbidden, RestrictedUnpickler, numpy_globals

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype. bfloat16 has no numpy dtype: it is
# read as its raw 16 bits and widened to float32 afterwards.
_STORAGE_DTYPES = {
    'FloatStorage': np.dtype('float32'),
    'DoubleStorage': np.dtype('float64'),
    'HalfStorage': np.dtype('float16'),
    'BFloat16Storage': 'bfloat16',
    'LongStorage': np.dtype('int64'),
    'IntStorage': np.dtype('int32'),
    'ShortStorage': np.dtype('int16'),
    'CharStorage': np.dtype('int8'),
    'ByteStorage': np.dtype('uint8'),
    'BoolStorage': np.dtype('bool'),
    'UntypedStorage': np.dtype('uint8'),
}

_TORCH_DTYPES = {
    'float32': 'float32', 'float': 'float32', 'float64': 'float64', 'double': 'float64',
    'float16': 'float16', 'half': 'float16', 'bfloat16': 'bfloat16',
    'int64': 'int64', 'long': 'int64', 'int32': 'int32', 'int': 'int32',
    'int16': 'int16', 'short': 'int16', 'int8': 'int8', 'uint8': 'uint8', 'bool': 'bool',
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self):
        return f'torch.{self.name}'


class _TorchDtype:
    """Stands in for ``torch.float32`` & co.; only carries the name."""

    def __init__(self, name):
        self.name = name


class _Marker:
    """A torch class that may be named as a rebuild target (Tensor, Parameter)."""

    def __init__(self, name):
        self.name = name


class _Storage:
    """A storage named by the pickle; its bytes are filled in later."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.array = None  # 1-d numpy array once read

    @property
    def np_dtype(self):
        return np.dtype('uint16') if self.dtype == 'bfloat16' else self.dtype

    def buffer(self):
        return self.array


class _StorageView:
    """Legacy (torch < 1.0) storage view: a slice of a root storage."""

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = offset
        self.numel = numel
        self.dtype = root.dtype

    def buffer(self):
        buf = self.root.buffer()
        if buf is None:
            return None
        if self.offset < 0 or self.numel < 0 or self.offset + self.numel > buf.shape[0]:
            raise _Corrupt(f'storage view [{self.offset}, +{self.numel}) lies outside its '
                           f'storage of {buf.shape[0]} elements')
        return buf[self.offset:self.offset + self.numel]


class _TensorRef:
    """A tensor whose data is read once all storages are known."""

    def __init__(self, storage, offset, shape, stride):
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride


class _Corrupt(Exception):
    """Internal: the file's content is inconsistent (reported as UserError)."""


def _as_int_tuple(value, what):
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise _Corrupt(f'tensor {what} is not a sequence of integers: {value!r}') from None
    return out


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    if not isinstance(storage, (_Storage, _StorageView)):
        raise _Corrupt(f'tensor rebuilt from a {type(storage).__name__}, not a storage')
    return _TensorRef(storage, int(storage_offset), _as_int_tuple(size, 'size'),
                      _as_int_tuple(stride, 'stride'))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if metadata:
        # conj / neg bits: only meaningful for complex or lazily negated views.
        raise _Corrupt(f'tensor carries unsupported metadata {metadata!r}')
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _torch_globals():
    out = {
        ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
        ('torch._utils', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
        ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
        ('torch', 'Tensor'): _Marker('Tensor'),
        ('torch.nn.parameter', 'Parameter'): _Marker('Parameter'),
    }
    for name in _STORAGE_DTYPES:
        for mod in ('torch', 'torch.cuda', 'torch.storage'):
            out[(mod, name)] = _StorageType(name)
    for name in _TORCH_DTYPES:
        out[('torch', name)] = _TorchDtype(_TORCH_DTYPES[name])
    return out


class _TorchUnpickler(RestrictedUnpickler):
    allowed = None  # set on first use

    def __init__(self, f, storages, persistent_kind):
        super().__init__(f)
        if _TorchUnpickler.allowed is None:
            allowed = dict(COMMON_GLOBALS)
            allowed.update(numpy_globals())
            allowed.update(_torch_globals())
            _TorchUnpickler.allowed = allowed
        self.storages = storages
        self.kind = persistent_kind

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt(f'unexpected persistent id {pid!r}')
        tag = pid[0].decode('ascii') if isinstance(pid[0], bytes) else pid[0]
        if tag == 'module':
            raise _Corrupt('it holds a pickled nn.Module, not a state_dict; '
                           'save model.state_dict() instead')
        if tag != 'storage':
            raise _Corrupt(f'unexpected persistent id type {tag!r}')
        if self.kind == 'zip':
            if len(pid) != 5:
                raise _Corrupt(f'malformed storage id {pid!r}')
            _, stype, key, _location, numel = pid
            view = None
        else:
            if len(pid) != 6:
                raise _Corrupt(f'malformed storage id {pid!r}')
            _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType):
            raise _Corrupt(f'storage of unknown type {stype!r}')
        if isinstance(key, bytes):
            key = key.decode('ascii')
        key = str(key)
        numel = int(numel)
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, stype.dtype, numel)
        elif st.dtype != stype.dtype:
            raise _Corrupt(f'storage {key} is used with two dtypes')
        if view is None:
            return st
        view_key, offset, view_numel = view
        view_key = view_key.decode('ascii') if isinstance(view_key, bytes) else str(view_key)
        vkey = ('view', view_key)
        if vkey not in self.storages:
            self.storages[vkey] = _StorageView(st, int(offset), int(view_numel))
        return self.storages[vkey]


def _plain_load(f):
    """A pickle that must contain no globals at all (legacy headers)."""
    return RestrictedUnpickler(f).load()


def _read_legacy(f, size):
    try:
        magic = _plain_load(f)
    except Exception:
        raise _NotTorch() from None
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise _NotTorch()
    try:
        return _read_legacy_body(f, size)
    except (EOFError, pickle.UnpicklingError) as e:
        raise _Truncated(f'the pickle stops early or is damaged ({e})') from None


def _read_legacy_body(f, size):
    proto = _plain_load(f)
    if proto != LEGACY_PROTOCOL:
        raise _Corrupt(f'unsupported legacy protocol version {proto!r}')
    sys_info = _plain_load(f)
    little = True
    if isinstance(sys_info, dict):
        little = bool(sys_info.get('little_endian', True))
    storages = {}
    obj = _TorchUnpickler(f, storages, 'legacy').load()
    keys = _plain_load(f)
    if not isinstance(keys, list):
        raise _Corrupt('the storage key list is missing')
    order = '<' if little else '>'
    for key in keys:
        key = key.decode('ascii') if isinstance(key, bytes) else str(key)
        st = storages.get(key)
        if st is None:
            raise _Corrupt(f'storage {key} is listed but never used')
        head = f.read(8)
        if len(head) != 8:
            raise _Truncated(f'storage {key}: its size field is cut off')
        (count,) = struct.unpack(order + 'q', head)
        if count != st.numel:
            raise _Corrupt(f'storage {key} has {count} elements on disk, '
                           f'{st.numel} in the pickle')
        dt = st.np_dtype.newbyteorder(order)
        nbytes = count * dt.itemsize
        left = size - f.tell()
        if nbytes > left:
            raise _Truncated(f'storage {key} needs {nbytes} bytes, only {max(left, 0)} left')
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise _Truncated(f'storage {key} needs {nbytes} bytes, got {len(data)}')
        st.array = np.frombuffer(data, dtype=dt, count=count)
    return obj, storages


def _read_zip(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n == 'data.pkl' or
                (n.endswith('/data.pkl') and n.count('/') == 1)]
        if not pkls:
            raise _Corrupt('zip archive without data.pkl (not a torch.save file)')
        pkl = pkls[0]
        prefix = pkl[:-len('data.pkl')]
        if any(n.startswith(prefix + 'code/') for n in names) or prefix + 'constants.pkl' in names:
            raise _Corrupt('it is a TorchScript archive (torch.jit.save); '
                           'save model.state_dict() with torch.save instead')
        order = '<'
        if prefix + 'byteorder' in names:
            bo = zf.read(prefix + 'byteorder').strip()
            if bo not in (b'little', b'big'):
                raise _Corrupt(f'unknown byteorder {bo!r}')
            order = '<' if bo == b'little' else '>'
        storages = {}
        obj = _TorchUnpickler(io.BytesIO(zf.read(pkl)), storages, 'zip').load()
        for key, st in storages.items():
            if not isinstance(st, _Storage):
                continue
            entry = f'{prefix}data/{key}'
            try:
                data = zf.read(entry)
            except KeyError:
                raise _Corrupt(f'storage {entry} is missing from the archive') from None
            dt = st.np_dtype.newbyteorder(order)
            nbytes = st.numel * dt.itemsize
            if len(data) < nbytes:
                raise _Corrupt(f'storage {entry} has {len(data)} bytes, needs {nbytes}')
            st.array = np.frombuffer(data, dtype=dt, count=st.numel)
    return obj, storages


class _NotTorch(Exception):
    pass


class _Truncated(Exception):
    pass


def _materialize(ref):
    """Cut a tensor out of its storage (offset + strides) and copy it."""
    buf = ref.storage.buffer()
    if buf is None:
        raise _Corrupt('a storage used by a tensor has no data in the file')
    shape, stride, offset = ref.shape, ref.stride, ref.offset
    if len(shape) != len(stride):
        raise _Corrupt(f'tensor size {shape} and stride {stride} disagree')
    if any(s < 0 for s in shape) or any(s < 0 for s in stride) or offset < 0:
        raise _Corrupt(f'negative size/stride/offset {shape} {stride} {offset}')
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n == 0:
        arr = np.zeros(shape, dtype=buf.dtype)
    else:
        last = offset + sum((d - 1) * s for d, s in zip(shape, stride))
        if last >= buf.shape[0]:
            raise _Corrupt(f'tensor of size {shape} stride {stride} offset {offset} '
                           f'reaches past its storage of {buf.shape[0]} elements')
        item = buf.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            buf[offset:], shape=shape, strides=tuple(s * item for s in stride), writeable=False)
        arr = np.array(view, copy=True, order='C')
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder('='))
    if ref.storage.dtype == 'bfloat16':
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif arr.dtype in (np.float64, np.float16):
        arr = arr.astype(np.float32)
    return arr


def _unwrap(obj):
    """Find the state_dict inside common wrappers and strip DataParallel's prefix."""
    while isinstance(obj, dict) and not all(isinstance(v, _TensorRef) for v in obj.values()):
        for wrapper in ('state_dict', 'model'):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise _Corrupt(f'it holds a {type(obj).__name__}, not a state_dict')
    if not obj:
        raise _Corrupt('the state_dict is empty')
    bad = [k for k, v in obj.items() if not isinstance(v, _TensorRef)]
    if bad:
        keys = ', '.join(repr(k) for k in list(obj)[:8])
        raise _Corrupt(f'not a state_dict: {len(bad)} of its {len(obj)} entries are not tensors '
                       f'(e.g. {bad[0]!r}: {type(obj[bad[0]]).__name__}); top-level keys: {keys}'
                       + (', ...' if len(obj) > 8 else ''))
    nonstr = [k for k in obj if not isinstance(k, str)]
    if nonstr:
        raise _Corrupt(f'state_dict key {nonstr[0]!r} is not a string')
    if all(k.startswith('module.') for k in obj):
        obj = OrderedDict((k[len('module.'):], v) for k, v in obj.items())
    return obj


def load_torch_file(path):
    """Read a torch.save()d state_dict (zip or legacy format) into numpy arrays.

    Returns an ordered ``{key: numpy.ndarray}``; floating tensors come back as
    float32 (float64/float16/bfloat16 are converted), integer and bool tensors
    keep their numpy dtype. Every problem is a one-line ``UserError``.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
            size = os.fstat(f.fileno()).st_size
            f.seek(0)
            if head[:2] == b'PK':
                if not zipfile.is_zipfile(path):
                    raise _Truncated('zip archive (torch >= 1.6 format) without its central '
                                     'directory')
                obj, _ = _read_zip(path)
            else:
                obj, _ = _read_legacy(f, size)
        state = _unwrap(obj)
        return OrderedDict((k, _materialize(v)) for k, v in state.items())
    except UserError:
        raise
    except Forbidden as e:
        raise UserError(f"{path}: refusing to load: the pickle asks for '{e}', which a "
                        'PyTorch state_dict never needs') from None
    except _NotTorch:
        raise UserError(f'{path}: not a PyTorch checkpoint' + _old_tar_hint(path)) from None
    except _Truncated as e:
        raise UserError(f'{path}: file is truncated or corrupt: {e}') from None
    except _Corrupt as e:
        raise UserError(f'{path}: cannot read this PyTorch checkpoint: {e}') from None
    except OSError as e:
        raise read_error(path, e, 'a checkpoint file') from None
    except MemoryError:
        raise UserError(f'{path}: out of memory while reading the checkpoint') from None
    except Exception as e:  # any parse failure of a damaged file
        msg = str(e).splitlines()[0] if str(e) else ''
        raise UserError(f'{path}: not a readable PyTorch checkpoint (truncated or corrupt: '
                        f'{type(e).__name__}{": " + msg if msg else ""})') from None


def _old_tar_hint(path):
    try:
        if tarfile.is_tarfile(path):
            return ' in a supported format (it is the tar format of torch < 0.4; ' \
                   're-save it with a newer torch)'
    except OSError:
        pass
    return ' (neither a torch >= 1.6 zip archive nor a legacy torch.save file)'


def is_torch_file(path):
    """Cheap sniff: zip archive or legacy magic number at the start."""
    try:
        with open(path, 'rb') as f:
            head = f.read(64)
    except OSError:
        return False
    if head[:2] == b'PK':
        return True
    try:
        return _plain_load(io.BytesIO(head)) == LEGACY_MAGIC
    except Exception:
        return False
