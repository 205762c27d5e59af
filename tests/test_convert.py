"""Checkpoint reading and conversion, checked against real torch.save files.

torch is a test-only tool here: it writes the checkpoints (zip and legacy
format, with shared storages and strided views) and is the oracle for the
values. The converter itself runs in a subprocess where torch cannot be
imported, as on a user's machine.

One file: every test here builds on the same torch-written files (the
session fixtures at the top), reading them and converting them are one path
(weights/torch_pickle.py -> checkpoint.py -> cli/convert.py), and split
files would each re-create those files.
"""
import os
import pickle
import struct
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import REFERENCE, ROOT, run_child, symlink_or_skip
from jittor_sbvsr.errors import UserError
from jittor_sbvsr.weights import checkpoint as ckpt
from jittor_sbvsr.weights.torch_pickle import load_torch_file

TOOL = ROOT / 'tools' / 'convert_torch_weights.py'
N_KEYS, N_VALUES = 272, 18_900_215

# Runs the tool after proving that torch is not importable in this process.
NO_TORCH_RUNNER = '''
import runpy, sys
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit('test set-up error: torch is importable')
tool = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(tool, run_name='__main__')
'''


def upstream_keys():
    out = []
    for line in (REFERENCE / 'upstream_state_dict_keys.txt').read_text(encoding='utf-8').splitlines():
        key, shape, _ = line.split('\t')
        out.append((key, tuple(int(s) for s in shape.split(','))))
    return out


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('convert')


@pytest.fixture(scope='session')
def no_torch_path(workdir):
    d = workdir / 'no_torch'
    (d / 'torch').mkdir(parents=True)
    (d / 'torch' / '__init__.py').write_text(
        "raise ImportError('torch is blocked in this test')\n", encoding='utf-8')
    return d


def _model_state():
    """All 272 reference keys; some tensors are views sharing storages."""
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict((k, torch.randn(s, generator=gen)) for k, s in upstream_keys())
    # weight and bias cut out of one flat storage, at non-zero offsets
    w, b = sd['in_conv.0.weight'], sd['in_conv.0.bias']
    flat = torch.randn(5 + w.numel() + b.numel() + 3, generator=gen)
    sd['in_conv.0.weight'] = flat[5:5 + w.numel()].view(w.shape)
    sd['in_conv.0.bias'] = flat[5 + w.numel():5 + w.numel() + b.numel()]
    # non-contiguous permuted conv weight and transposed linear weight
    o, i, kh, kw = sd['extra_feat.0.conv1.weight'].shape
    sd['extra_feat.0.conv1.weight'] = torch.randn(kh, kw, i, o, generator=gen).permute(3, 2, 0, 1)
    o, i = sd['kernel_net.fc_net.1.weight'].shape
    sd['kernel_net.fc_net.1.weight'] = torch.randn(i, o, generator=gen).t()
    # strided view (every other element) and a slice of a bigger tensor
    n = sd['out_conv.1.bias'].numel()
    sd['out_conv.1.bias'] = torch.randn(2 * n + 1, generator=gen)[1::2]
    big = torch.randn(2, *sd['out_conv.1.weight'].shape, generator=gen)
    sd['out_conv.1.weight'] = big[1]
    assert not sd['extra_feat.0.conv1.weight'].is_contiguous()
    assert sd['in_conv.0.bias'].storage_offset() > 0
    return sd


@pytest.fixture(scope='session')
def model_files(workdir, reference_dir):
    sd = _model_state()
    d = workdir / 'in dir ü'
    d.mkdir()
    paths = {'zip': d / 'model zip.pt', 'legacy': d / 'model legacy.pt'}
    torch.save(sd, paths['zip'])
    torch.save(sd, paths['legacy'], _use_new_zipfile_serialization=False)
    ref = OrderedDict((k, v.contiguous().numpy()) for k, v in sd.items())
    return ref, paths


def run_tool(args, no_torch_path):
    env = dict(os.environ, PYTHONPATH=str(no_torch_path), PYTHONIOENCODING='utf-8')
    cmd = [sys.executable, '-c', NO_TORCH_RUNNER, str(TOOL)] + [str(a) for a in args]
    return run_child(cmd, capture_output=True, encoding='utf-8', env=env, timeout=300)


def error_lines(proc):
    """stderr lines, without the runtime's one-off warning about oneDNN."""
    return [line for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith('jittor-sbvsr: warning')]


def assert_one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    assert 'Traceback' not in proc.stderr
    assert proc.stdout == ''
    return lines[0]


def assert_bit_equal(got, ref):
    assert list(got) == list(ref)
    for k in ref:
        g, r = got[k], np.asarray(ref[k], order='C')
        assert g.dtype == r.dtype and g.shape == r.shape, k
        assert g.tobytes() == r.tobytes(), k


def listing(d):
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------- the reader

def _small_state():
    gen = torch.Generator().manual_seed(1)
    flat = torch.randn(100, generator=gen)
    base = torch.randn(4, 6, generator=gen)
    return OrderedDict([
        ('w', flat[:60].view(5, 12)), ('b', flat[60:65]), ('t', base.t()), ('s', base[:, ::2]),
        ('scalar', torch.tensor(3.25)),
        ('f64', torch.randn(3, 3, dtype=torch.float64, generator=gen)),
        ('f16', torch.randn(7, generator=gen).half()),
        ('bf16', torch.randn(5, generator=gen).bfloat16()),
        ('i64', torch.arange(-3, 5)), ('u8', torch.arange(6, dtype=torch.uint8)),
        ('bool', torch.tensor([True, False, True])), ('empty', torch.zeros(0, 3)),
        ('param', torch.nn.Parameter(torch.randn(2, 2, generator=gen))),
        ('permuted', torch.randn(2, 3, 4, generator=gen).permute(2, 0, 1)[1:, :, 1:]),
    ])


def _expected_numpy(t):
    t = t.detach()
    return (t.float() if t.is_floating_point() else t).contiguous().numpy()


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_reader_dtypes_and_views(tmp_path, legacy):
    sd = _small_state()
    p = tmp_path / 'small.pt'
    torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
    got = load_torch_file(p)
    ref = OrderedDict((k, _expected_numpy(v)) for k, v in sd.items())
    assert_bit_equal(got, ref)
    assert got['scalar'].shape == () and got['i64'].dtype == np.int64
    assert got['f64'].dtype == got['f16'].dtype == got['bf16'].dtype == np.float32


def _write_legacy_041(path, obj, storages):
    """Write the torch 0.4.1 legacy layout by hand, with storage *views*
    (view_metadata), which newer torch versions no longer produce."""

    class Storage:
        def __init__(self, pid):
            self.pid = pid

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, Storage) else None

        def reducer_override(self, o):
            if isinstance(o, Tensor):
                return torch._utils._rebuild_tensor_v2, o.args
            return NotImplemented

    objs = {}
    for key, (stype, data, views) in storages.items():
        objs[key] = Storage(('storage', stype, key, 'cuda:0', data.size, None))
        for vkey, off, n in views:
            objs[vkey] = Storage(('storage', stype, key, 'cuda:0', data.size, (vkey, off, n)))
    tree = OrderedDict((k, Tensor(objs[s], off, size, stride))
                       for k, (s, off, size, stride) in obj.items())
    with open(path, 'wb') as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({'protocol_version': 1001, 'little_endian': True,
                     'type_sizes': {'short': 2, 'int': 4, 'long': 8}}, f, protocol=2)
        Pickler(f, protocol=2).dump(tree)
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            data = storages[key][1]
            f.write(struct.pack('<q', data.size))
            f.write(data.astype(data.dtype.newbyteorder('<')).tobytes())


def test_reader_legacy_storage_views(tmp_path):
    """0.4.1 files may hold views of storages (and GPU storage types)."""
    rng = np.random.RandomState(0)
    root = rng.randn(50).astype(np.float32)
    other = rng.randn(12)  # float64
    storages = {'140': (torch.cuda.FloatStorage, root, [('141', 10, 20), ('142', 30, 15)]),
                '150': (torch.DoubleStorage, other, [])}
    obj = OrderedDict([('a', ('141', 2, (3, 4), (1, 3))), ('b', ('142', 0, (15,), (1,))),
                       ('c', ('140', 5, (2, 2), (10, 1))), ('d', ('141', 19, (), ())),
                       ('e', ('150', 1, (2, 5), (5, 1)))])
    p = tmp_path / 'old.pt'
    _write_legacy_041(p, obj, storages)
    got = load_torch_file(p)
    ref = torch.load(p, map_location='cpu', weights_only=False)
    assert_bit_equal(got, OrderedDict((k, _expected_numpy(v)) for k, v in ref.items()))
    assert got['a'][0, 0] == root[12] and got['d'] == root[29]


def test_reader_unwraps(tmp_path):
    t = OrderedDict([('x.weight', torch.ones(2, 3)), ('x.bias', torch.arange(2.))])
    cases = {'sd': {'state_dict': t, 'epoch': 3},
             'model': {'model': t, 'optimizer': None},
             'dp': OrderedDict(('module.' + k, v) for k, v in t.items())}
    for name, obj in cases.items():
        p = tmp_path / f'{name}.pt'
        torch.save(obj, p)
        got = load_torch_file(p)
        assert list(got) == ['x.weight', 'x.bias'], name
        assert np.array_equal(got['x.bias'], [0, 1])
    # a real nn.Module state_dict (carries _metadata), wrapped in DataParallel
    net = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3)))
    for legacy in (False, True):
        p = tmp_path / f'dp{legacy}.pt'
        torch.save({'state_dict': net.state_dict()}, p, _use_new_zipfile_serialization=not legacy)
        got = load_torch_file(p)
        assert list(got) == ['0.weight', '0.bias']
        assert np.array_equal(got['0.weight'], net.module[0].weight.detach().numpy())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_reader_refuses_code(tmp_path, legacy):
    marker = tmp_path / 'pwned'
    p = tmp_path / 'evil.pt'
    torch.save({'w': torch.ones(1), 'x': _Evil(marker)}, p,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError) as e:
        load_torch_file(p)
    assert str(p) in str(e.value) and 'mkdir' in str(e.value)
    assert not marker.exists()


def test_reader_bad_files(tmp_path):
    (tmp_path / 'text.pt').write_text('hello\n', encoding='utf-8')
    (tmp_path / 'empty.pt').write_bytes(b'')
    with open(tmp_path / 'plain.pkl', 'wb') as f:
        pickle.dump({'a': 1}, f)
    torch.save([torch.ones(1)], tmp_path / 'list.pt')
    for name in ('text.pt', 'empty.pt', 'plain.pkl', 'missing.pt', 'list.pt', '.'):
        p = tmp_path / name
        with pytest.raises(UserError) as e:
            load_torch_file(p)
        msg = str(e.value)
        assert msg.startswith(str(p) + ':') and '\n' not in msg, msg


def test_reader_needs_no_torch(tmp_path, no_torch_path):
    sd = _small_state()
    paths = []
    for legacy in (False, True):
        p = tmp_path / f'small {int(legacy)}.pt'
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        paths.append(str(p))
    out = tmp_path / 'out.pkl'
    code = ('import sys, pickle\n'
            'from jittor_sbvsr.weights.torch_pickle import load_torch_file\n'
            'res = [dict(load_torch_file(p)) for p in sys.argv[1:3]]\n'
            "assert 'torch' not in sys.modules\n"
            "pickle.dump(res, open(sys.argv[3], 'wb'))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(no_torch_path), str(ROOT)]))
    proc = run_child([sys.executable, '-c', code] + paths + [str(out)],
                     capture_output=True, text=True, env=env, timeout=120, encoding='utf-8')
    assert proc.returncode == 0, proc.stderr
    ref = OrderedDict((k, _expected_numpy(v)) for k, v in sd.items())
    with open(out, 'rb') as f:
        for got in pickle.load(f):
            assert_bit_equal(got, ref)


# ------------------------------------------------------------- the converter

def test_help_does_not_import_jittor(no_torch_path):
    (no_torch_path / 'jittor').mkdir(exist_ok=True)
    (no_torch_path / 'jittor' / '__init__.py').write_text("raise ImportError('blocked')\n", encoding='utf-8')
    try:
        proc = run_tool(['--help'], no_torch_path)
    finally:
        (no_torch_path / 'jittor' / '__init__.py').unlink()
        (no_torch_path / 'jittor').rmdir()
    assert proc.returncode == 0 and 'usage' in proc.stdout, proc.stderr


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_convert_full_model(model_files, no_torch_path, workdir, fmt):
    ref, paths = model_files
    out_dir = workdir / f'out dir é {fmt}'
    out_dir.mkdir()
    out = out_dir / 'weights ü.pkl'
    proc = run_tool([paths[fmt], out], no_torch_path)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip()
    assert '\n' not in summary
    assert f'{N_KEYS} tensors' in summary and f'{N_VALUES:,} values' in summary
    assert 'full model' in summary
    assert listing(out_dir) == ['weights ü.pkl']
    with open(out, 'rb') as f:
        assert_bit_equal(pickle.load(f), ref)
    assert_bit_equal(ckpt.load_state(out), ref)


def test_convert_wrong_architecture(model_files, no_torch_path, workdir):
    ref, _ = model_files
    sd = OrderedDict((k, torch.from_numpy(v)) for k, v in ref.items())
    del sd['in_conv.0.bias'], sd['kernel_net.fc_net.1.weight']
    sd['extra.head.weight'] = torch.zeros(3)
    sd['out_conv.1.weight'] = torch.zeros(4, 128, 3, 3)
    d = workdir / 'wrong'
    d.mkdir()
    src, out = d / 'wrong.pt', d / 'existing.pkl'
    torch.save(sd, src)
    out.write_bytes(b'precious')
    msg = assert_one_line_error(run_tool([src, out], no_torch_path))
    assert str(src) in msg
    for part in ('2 missing keys', 'in_conv.0.bias', 'kernel_net.fc_net.1.weight',
                 '1 unexpected key', 'extra.head.weight', '1 mis-shaped key',
                 'out_conv.1.weight (file [4,128,3,3], model [3,128,3,3])'):
        assert part in msg, msg
    assert out.read_bytes() == b'precious'
    assert listing(d) == ['existing.pkl', 'wrong.pt']


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_convert_truncated(model_files, no_torch_path, workdir, fmt):
    _, paths = model_files
    d = workdir / f'truncated {fmt}'
    d.mkdir()
    src, out = d / 'half.pt', d / 'out.pkl'
    data = paths[fmt].read_bytes()
    src.write_bytes(data[:len(data) // 2])
    out.write_bytes(b'old')
    msg = assert_one_line_error(run_tool([src, out], no_torch_path))
    assert str(src) in msg and 'truncated' in msg
    assert out.read_bytes() == b'old'
    assert listing(d) == ['half.pt', 'out.pkl']


def test_convert_pwc_net(model_files, no_torch_path, workdir):
    ref, _ = model_files
    prefix = ckpt.FLOW_PREFIX
    flow = OrderedDict((k[len(prefix):], v) for k, v in ref.items() if k.startswith(prefix))
    assert 'moduleExtractor.moduleOne.0.weight' in flow and len(flow) == 126
    d = workdir / 'pwc'
    d.mkdir()
    src, out = d / 'network-default.pytorch', d / 'pwc.pkl'
    torch.save(OrderedDict((k, torch.from_numpy(v)) for k, v in flow.items()), src,
               _use_new_zipfile_serialization=False)
    proc = run_tool([src, out], no_torch_path)
    assert proc.returncode == 0, proc.stderr
    assert 'PWC-Net' in proc.stdout and '126 tensors' in proc.stdout
    assert_bit_equal(ckpt.load_state(out), flow)
    # a PWC file with a wrong key is still checked strictly
    bad = OrderedDict((k, torch.from_numpy(v)) for k, v in flow.items())
    bad.pop('moduleRefiner.moduleMain.12.bias')
    torch.save(bad, src)
    msg = assert_one_line_error(run_tool([src, d / 'bad.pkl'], no_torch_path))
    assert '1 missing key' in msg and 'moduleRefiner.moduleMain.12.bias' in msg
    assert not (d / 'bad.pkl').exists()


# ------------------------------------------------------- checkpoint helpers

def test_load_state_pt_in_memory(model_files):
    ref, paths = model_files
    before = listing(paths['zip'].parent)
    assert_bit_equal(ckpt.load_state(paths['zip']), ref)
    assert listing(paths['zip'].parent) == before


def test_save_and_load_pkl_atomic(tmp_path, monkeypatch):
    state = OrderedDict([('a', np.arange(6, dtype=np.float32).reshape(2, 3)),
                         ('b', np.float64(2.5) * np.ones(2))])
    p = tmp_path / 'w ü.pkl'
    ckpt.save_state_atomic(state, p)
    got = ckpt.load_state(p)
    assert list(got) == ['a', 'b'] and got['b'].dtype == np.float32
    assert np.array_equal(got['a'], state['a'])

    def broken_dump(*a, **k):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(ckpt.pickle, 'dump', broken_dump)
    with pytest.raises(UserError, match='No space left'):
        ckpt.save_state_atomic({'a': np.zeros(3)}, p)
    monkeypatch.undo()
    assert listing(tmp_path) == ['w ü.pkl']
    assert np.array_equal(ckpt.load_state(p)['a'], state['a'])


def test_pkl_reader_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    p = tmp_path / 'evil.pkl'
    with open(p, 'wb') as f:
        pickle.dump({'a': np.zeros(2, np.float32), 'b': _Evil(marker)}, f)
    with pytest.raises(UserError, match='mkdir'):
        ckpt.load_state(p)
    assert not marker.exists()
    with open(p, 'wb') as f:
        pickle.dump({'a': np.zeros(2, np.int64)}, f)
    with pytest.raises(UserError, match='not float tensors: a'):
        ckpt.load_state(p)


def test_validate_state_lists_everything():
    expected = OrderedDict((f'k{i}', (2,)) for i in range(30))
    state = {f'k{i}': np.zeros(2, np.float32) for i in range(5, 30)}
    state['k7'] = np.zeros(3, np.float32)
    state.update({f'x{i}': np.zeros(1) for i in range(12)})
    with pytest.raises(UserError) as e:
        ckpt.validate_state(state, expected, 'f.pkl')
    msg = str(e.value)
    assert msg.startswith('f.pkl: ') and '\n' not in msg
    assert '5 missing keys: k0, k1, k2, k3, k4' in msg
    assert '12 unexpected keys: x0' in msg and '(+4 more)' in msg
    assert '1 mis-shaped key: k7 (file [3], model [2])' in msg
    ckpt.validate_state({k: np.zeros(2) for k in expected}, expected, 'f.pkl')


def test_load_into_module():
    from jittor import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)
            self.body = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))

    net = Net()
    shapes = ckpt.expected_shapes(net)
    assert shapes['conv.weight'] == (3, 2, 3, 3) and shapes['body.2.bias'] == (2,)
    rng = np.random.RandomState(0)
    state = {k: rng.randn(*s).astype(np.float32) for k, s in shapes.items()}
    ckpt.load_into_module(net, state, 'w.pkl')
    for k, v in net.state_dict().items():
        assert np.array_equal(v.numpy(), state[k]), k
    bad = dict(state)
    bad['body.0.weight'] = np.zeros((4, 5), np.float32)
    with pytest.raises(UserError, match='mis-shaped key: body.0.weight'):
        ckpt.load_into_module(net, bad, 'w.pkl')
    assert np.array_equal(net.body[0].weight.numpy(), state['body.0.weight'])


# ------------------------------------------------------- the converter's bad inputs

@pytest.mark.parametrize('how', ['same path', 'symlink', 'hard link'])
def test_convert_never_overwrites_its_input(model_files, no_torch_path, workdir, how):
    _, paths = model_files
    d = workdir / f'same {how}'
    d.mkdir()
    src = d / 'model.pt'
    src.write_bytes(paths['zip'].read_bytes())
    before = src.read_bytes()
    out = src
    if how == 'symlink':
        out = d / 'link.pkl'
        symlink_or_skip(out, src)
    elif how == 'hard link':
        out = d / 'hard.pkl'
        os.link(src, out)
    msg = assert_one_line_error(run_tool([src, out], no_torch_path))
    assert 'is the input file' in msg and str(out) in msg
    assert src.read_bytes() == before
    assert listing(d) == sorted(['model.pt'] + ([out.name] if out != src else []))


def test_convert_refuses_nan_weights(model_files, no_torch_path, workdir):
    ref, _ = model_files
    sd = OrderedDict((k, torch.from_numpy(v.copy())) for k, v in ref.items())
    sd['recons_net.3.conv1.weight'][0, 0, 0, 0] = float('nan')
    d = workdir / 'nan'
    d.mkdir()
    torch.save(sd, d / 'nan.pt')
    msg = assert_one_line_error(run_tool([d / 'nan.pt', d / 'nan.pkl'], no_torch_path))
    assert 'NaN' in msg and 'recons_net.3.conv1.weight' in msg and 'did not load' not in msg
    assert listing(d) == ['nan.pt']


def test_convert_derives_the_architecture_from_the_checkpoint(no_torch_path, workdir):
    """A model trained with other options (the demo's: n_feat 16, 1 + 2 ResBlocks) converts as it is."""
    from jittor_sbvsr.weights.arch import derive_arch
    from jittor_sbvsr.models import PWC_Recons
    shapes = ckpt.expected_shapes(PWC_Recons(n_feat=16, extra_RBS=1, recons_RBS=2, scale=2))
    gen = torch.Generator().manual_seed(2)
    sd = OrderedDict((k, torch.randn(s, generator=gen)) for k, s in shapes.items())
    d = workdir / 'tiny arch'
    d.mkdir()
    torch.save(sd, d / 'tiny.pt')
    proc = run_tool([d / 'tiny.pt', d / 'tiny.pkl'], no_torch_path)
    assert proc.returncode == 0, proc.stderr
    assert 'x2, 5-frame windows, n_feat 16, 1 + 2 ResBlocks' in proc.stdout
    state = ckpt.load_state(d / 'tiny.pkl')
    assert derive_arch(state, 'tiny.pkl')['n_feat'] == 16
    # one ResBlock missing: the key check names it, against the architecture the rest describes
    del sd['recons_net.1.conv2.weight']
    torch.save(sd, d / 'broken.pt')
    msg = assert_one_line_error(run_tool([d / 'broken.pt', d / 'broken.pkl'], no_torch_path))
    assert '1 missing key: recons_net.1.conv2.weight' in msg and 'n_feat 16' in msg


def test_convert_removes_its_stale_temp_files_with_a_note(model_files, no_torch_path, workdir):
    _, paths = model_files
    d = workdir / 'stale'
    d.mkdir()
    mine, other = d / '.out.pkl.0123abcd.tmp.pkl', d / '.other.pkl.0123abcd.tmp.pkl'
    mine.write_bytes(b'left by kill -9')
    other.write_bytes(b'not ours to judge')
    proc = run_tool([paths['zip'], d / 'out.pkl'], no_torch_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('note: removed 1 temporary file') and mine.name in proc.stdout
    assert not mine.exists() and other.exists()
