"""The runtime per platform (jittor_sbvsr/runtime.py, the fused ops' flags), with faked platforms.

Only Linux runs here: Windows and WSL2 are faked by monkeypatching
``os.name``, ``platform.system``, the library loader and the paths, and each
test says what it stands for. Expected names come from Jittor's own source
(its ``install_mkl``), not from the code under test.
"""
import importlib.util
import os
import subprocess
import sys
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


# -------------------------------------------------------- CUDA driver ----

class _Loader:
    """A fake ctypes.CDLL that loads only the names given."""

    def __init__(self, *loadable):
        self.loadable, self.tried = loadable, []

    def __call__(self, name):
        self.tried.append(name)
        if name not in self.loadable:
            raise OSError(f'{name}: cannot open shared object file')


def test_install_copy_needs_jittors_edit(rt, monkeypatch, tmp_path):
    """The install's oneDNN counts only while Jittor carries the set-up's edit: a reinstalled Jittor
    looks in the user's cache alone (and would download oneDNN there), so oneDNN must then be off."""
    d = _fake_onednn(rt.onednn_dir(), rt.onednn_files())
    pkg = tmp_path / 'site' / 'jittor'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text('', encoding='utf-8')
    shipped = '        mkl_path = os.path.join(jit_utils.home(), ".cache", "jittor", "mkl")\n'
    (pkg / 'compile_extern.py').write_text(shipped, encoding='utf-8')
    monkeypatch.setattr(rt.importlib.util, 'find_spec',
                        lambda name: importlib.util.spec_from_file_location(name, pkg / '__init__.py'))
    assert rt.onednn_installed() and not rt.jittor_finds_onednn()
    onednn = importlib.util.spec_from_file_location('_install_onednn', ROOT / 'tools' / 'install_onednn.py')
    tool = importlib.util.module_from_spec(onednn)
    onednn.loader.exec_module(tool)
    tool.point_jittor(str(pkg))
    assert rt.jittor_finds_onednn()
    legacy = _fake_onednn(Path(os.environ['JITTOR_HOME'], '.cache', 'jittor', 'mkl', rt.ONEDNN_NAME), [])
    assert rt.jittor_finds_onednn(str(legacy)) and str(d).startswith(sys.prefix)


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
