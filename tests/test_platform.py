"""The runtime per platform (jittor_sbvsr/runtime.py, the fused ops' flags), with faked platforms.

Only Linux runs here: Windows and WSL2 are faked by monkeypatching
``os.name``, ``platform.system``, the library loader and the paths, and each
test says what it stands for. Expected names come from Jittor's own source
(its ``install_mkl``), not from the code under test.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / 'jittor_sbvsr' / 'runtime.py'
CJK = '用户 张三'


def _standalone_runtime():
    """A fresh copy of runtime.py, not the package's (whose state is set)."""
    spec = importlib.util.spec_from_file_location('_sbvsr_runtime_platform', RUNTIME)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _jittor_source(name):
    spec = importlib.util.find_spec('jittor')
    return (Path(spec.origin).parent / name).read_text(encoding='utf-8')


@pytest.fixture
def rt(monkeypatch, tmp_path):
    """runtime.py with sys.prefix (the installation) and JITTOR_HOME under a CJK folder with a space."""
    mod = _standalone_runtime()
    home = tmp_path / CJK
    monkeypatch.setattr(sys, 'prefix', str(home / 'venv'))
    monkeypatch.setenv('JITTOR_HOME', str(home / 'jhome'))
    return mod


def _fake_onednn(d, files):
    for f in files:
        p = Path(d, *f.split('/'))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'')
    return Path(d)


# ------------------------------------------------------------ oneDNN ----

def test_onednn_names_and_files_are_jittors(rt, monkeypatch):
    src = _jittor_source('compile_extern.py')
    # Jittor names the folder after its archive (install_mkl: filename.rsplit('.', 1)[0])
    assert '"dnnl_lnx_2.2.0_cpu_gomp.tgz"' in src and '"dnnl_win_2.2.0_cpu_vcomp.zip"' in src
    assert rt.ONEDNN_NAMES == {'posix': 'dnnl_lnx_2.2.0_cpu_gomp', 'nt': 'dnnl_win_2.2.0_cpu_vcomp'}
    # Jittor's setup_mkl checks these (libmkldnn.so; on Windows bin/dnnl.dll, linked as -ldnnl)
    assert '"libmkldnn.so"' in src and "'bin', 'dnnl.dll'" in src and '-ldnnl' in src
    assert 'lib/libmkldnn.so' in rt.onednn_files(windows=False)
    assert {'bin/dnnl.dll', 'lib/dnnl.lib', 'include/dnnl.h'} <= set(rt.onednn_files(windows=True))
    d = _fake_onednn(Path(sys.prefix) / 'onednn' / rt.ONEDNN_NAME, rt.onednn_files(windows=False))
    assert rt.onednn_installed(str(d))
    monkeypatch.setattr(rt.os, 'name', 'nt')  # a Linux install is no Windows one
    assert not rt.onednn_installed(str(d))


def test_onednn_dir_is_the_installations(rt):
    inst = Path(sys.prefix, 'onednn', rt.ONEDNN_NAME)
    user = Path(os.environ['JITTOR_HOME'], '.cache', 'jittor', 'mkl', rt.ONEDNN_NAME)
    assert rt.onednn_dir(sys.prefix) == str(inst) and rt.jittor_onednn_dir() == str(user)
    assert rt.onednn_dir() == str(inst)  # neither: where the set-up will put it
    _fake_onednn(user, rt.onednn_files())
    assert rt.onednn_dir() == str(user)  # only an older set-up's, per user
    _fake_onednn(inst, rt.onednn_files())
    assert rt.onednn_dir() == str(inst)  # both: the installation's


def test_link_onednn_points_jittor_at_the_installation(rt):
    inst = _fake_onednn(Path(sys.prefix, 'onednn', rt.ONEDNN_NAME), rt.onednn_files())
    where = Path(rt.jittor_onednn_dir())
    assert rt.link_onednn(str(inst)) is None
    assert where.is_symlink() and where.resolve() == inst.resolve()
    # Jittor's own lookup (setup_mkl): the first dnnl* folder under <home>/.cache/jittor/mkl
    mkl = where.parent
    assert [n for n in os.listdir(mkl) if n.startswith('dnnl') and (mkl / n).is_dir()] == [rt.ONEDNN_NAME]
    assert rt.link_onednn(str(inst)) is None  # again: nothing changes
    # the installation moved: the dangling link is replaced
    moved = Path(shutil.move(str(inst), str(inst) + ' moved'))
    assert rt.link_onednn(str(moved)) is None and where.resolve() == moved.resolve()


def test_link_onednn_keeps_an_older_copy_and_reports_a_failure(rt, tmp_path):
    inst = _fake_onednn(Path(sys.prefix, 'onednn', rt.ONEDNN_NAME), rt.onednn_files())
    copy = _fake_onednn(rt.jittor_onednn_dir(), rt.onednn_files())
    assert rt.link_onednn(str(inst)) is None and not copy.is_symlink()
    os.environ['JITTOR_HOME'] = str(tmp_path / 'a file')
    (tmp_path / 'a file').write_text('', encoding='utf-8')  # no folder can be made under it
    why = rt.link_onednn(str(inst))
    assert why and why.startswith('cannot link') and 'a file' in why


def test_windows_links_with_a_junction(rt, monkeypatch):
    """On Windows a symlink needs admin rights or developer mode; a junction does not."""
    made = []
    monkeypatch.setattr(rt.os, 'name', 'nt')
    monkeypatch.setitem(sys.modules, '_winapi', types.SimpleNamespace(
        CreateJunction=lambda target, link: made.append((target, link))))
    rt._dir_link('C:\\venv\\onednn\\x', 'C:\\Users\\用户 张三\\.cache\\jittor\\mkl\\x')
    assert made == [('C:\\venv\\onednn\\x', 'C:\\Users\\用户 张三\\.cache\\jittor\\mkl\\x')]


def test_prepare_links_the_installed_onednn(rt, monkeypatch, capsys):
    for k in ('use_mkl', 'nvcc_path', 'NVIDIA_TF32_OVERRIDE', 'use_cutt', 'use_nccl', 'cache_name'):
        monkeypatch.setenv(k, 'x')
        monkeypatch.delenv(k)
    monkeypatch.delitem(sys.modules, 'jittor', raising=False)
    monkeypatch.setattr(rt, 'cuda_driver_present', lambda: False)
    _fake_onednn(rt.onednn_dir(sys.prefix), rt.onednn_files())
    rt.prepare()
    assert 'use_mkl' not in os.environ and rt.onednn_enabled()
    assert Path(rt.jittor_onednn_dir()).is_symlink()
    assert capsys.readouterr().err == ''


# -------------------------------------------------------- CUDA driver ----

class _Loader:
    """A fake ctypes.CDLL that loads only the names given."""

    def __init__(self, *loadable):
        self.loadable, self.tried = loadable, []

    def __call__(self, name):
        self.tried.append(name)
        if name not in self.loadable:
            raise OSError(f'{name}: cannot open shared object file')


def test_cuda_driver_linux(rt, monkeypatch):
    monkeypatch.setattr(rt.os, 'name', 'posix')
    assert rt.cuda_driver(_Loader('libcuda.so.1')) == 'libcuda.so.1'
    load = _Loader()
    assert rt.cuda_driver(load) is None
    assert load.tried == ['libcuda.so.1']  # /usr/lib/wsl/lib does not exist here: not tried


def test_cuda_driver_wsl2(rt, monkeypatch):
    """WSL2: the driver is in /usr/lib/wsl/lib, which the loader may not search."""
    wsl = '/usr/lib/wsl/lib/libcuda.so.1'
    monkeypatch.setattr(rt.os, 'name', 'posix')
    real = os.path.isfile
    monkeypatch.setattr(rt.os.path, 'isfile', lambda p: p == wsl or real(p))
    assert rt.cuda_driver(_Loader(wsl)) == wsl


def test_cuda_driver_windows(rt, monkeypatch):
    monkeypatch.setattr(rt.os, 'name', 'nt')
    load = _Loader('nvcuda.dll')
    assert rt.cuda_driver(load) == 'nvcuda.dll' and load.tried == ['nvcuda.dll']
    assert rt.cuda_driver(_Loader('libcuda.so.1')) is None


# -------------------------------------------------- compiled core ----

@pytest.mark.parametrize('core', ['jittor_core.cpython-311-x86_64-linux-gnu.so', 'jittor_core.cp311-win_amd64.pyd'])
def test_core_cached_knows_so_and_pyd(rt, monkeypatch, core):
    monkeypatch.setenv('cache_name', 'sbvsr_x')
    d = Path(os.environ['JITTOR_HOME'], '.cache', 'jittor', 'jt1.3.8', 'cl', 'py3.11.9', 'Windows-10-x1', 'cpu',
             'sbvsr_x')
    d.mkdir(parents=True)
    (d / (core + '.key')).write_text('', encoding='utf-8')
    assert not rt._core_cached()
    (d / core).write_bytes(b'')
    assert rt._core_cached()


# -------------------------------------------- fused ops' flags, OpenMP ----

def test_fused_flags_per_compiler():
    import jittor_sbvsr  # noqa: F401
    from jittor_sbvsr.ops import fused_conv
    d = os.path.join('C:\\', CJK, 'onednn')
    msvc = fused_conv._flags('cl', d)
    assert '-Wl,' not in msvc and '-lmkldnn' not in msvc
    # Jittor's own MSVC flags for oneDNN (setup_mkl): -L lib and bin (dnnl.dll), -ldnnl
    assert f'-L"{os.path.join(d, "bin")}"' in msvc and ' -ldnnl ' in msvc
    for cc in ('g++', 'clang'):
        gcc = fused_conv._flags(cc, d)
        assert f'-Wl,-rpath,"{os.path.join(d, "lib")}"' in gcc and ' -lmkldnn ' in gcc


def _cpp_sources():
    """Every C++ source string of ours that uses OpenMP (module constants)."""
    import jittor_sbvsr  # noqa: F401
    from jittor_sbvsr import runtime
    from jittor_sbvsr.ops import correlation, fused_conv
    return {f'{m.__name__}.{k}': v for m in (runtime, correlation, fused_conv) for k, v in vars(m).items()
            if k.isupper() and isinstance(v, str) and '#pragma omp' in v}


def _preprocess(src, *flags):
    """g++'s preprocessor output for ``src`` (includes dropped: only the #if logic matters)."""
    text = '\n'.join(ln for ln in src.splitlines() if not ln.lstrip().startswith('#include'))
    r = subprocess.run(['g++', '-E', '-P', '-x', 'c++', *flags, '-'], input=text, capture_output=True,
                       text=True, encoding='utf-8', timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_openmp_is_guarded():
    """A compiler without OpenMP (Jittor's MSVC build passes no /openmp) sees no OpenMP at all;
    MSVC's OpenMP 2.0 gets no collapse clause; g++ with -fopenmp keeps every pragma."""
    sources = _cpp_sources()
    assert {'jittor_sbvsr.ops.correlation.CPU_FWD', 'jittor_sbvsr.ops.correlation.CPU_BWD',
            'jittor_sbvsr.runtime._FTZ_HEAD'} <= set(sources) and len(sources) >= 4, sorted(sources)
    for name, src in sources.items():
        plain = _preprocess(src)
        assert 'omp' not in plain, f'{name}: OpenMP used without #ifdef _OPENMP'
        assert 'pragma omp' in _preprocess(src, '-fopenmp'), name
        assert 'collapse' not in _preprocess(src, '-D_OPENMP=200203'), f'{name}: collapse needs OpenMP 3.0'
