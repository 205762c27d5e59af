"""The runtime per platform (jittor_sbvsr/runtime.py, the fused ops' flags), with faked platforms.

Only Linux runs here: Windows and WSL2 are faked by monkeypatching
``os.name``, ``platform.system``, the library loader and the paths, and each
test says what it stands for. Expected names come from Jittor's own source
(its ``install_mkl``), not from the code under test.
"""
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import run_child

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


# ------------------------------------- Windows' paths, DLLs and memory ----

def test_onednn_across_windows_drives(rt):
    """The checkout (and its venv) on D:, the user's oneDNN in C:\\Users\\张三\\.cache: Windows'
    os.path (ntpath) has no common path for two drives, and raises."""
    import ntpath
    user = 'C:\\Users\\张三\\.cache\\jittor\\mkl\\dnnl_win_2.2.0_cpu_vcomp'
    venv = 'D:\\sbvsr\\.venv'
    with pytest.raises(ValueError):
        ntpath.commonpath([user, venv])
    assert not rt.is_inside(user, venv, ntpath)
    assert rt.jittor_finds_onednn(user, venv, ntpath)  # the user's cache, which Jittor always searches
    assert rt.is_inside('d:\\SBVSR\\.venv\\onednn\\dnnl_win_2.2.0_cpu_vcomp', venv, ntpath)  # no case on Windows
    assert not rt.is_inside('D:\\sbvsr\\.venv2\\onednn', venv, ntpath)
    assert rt.is_inside('C:\\Users\\张三\\.venv\\onednn', 'C:\\Users\\张三\\.venv', ntpath)


def test_install_onednn_does_not_start_the_package():
    """The set-up's oneDNN step reads runtime.py's names; importing the package would configure
    Jittor and warn that oneDNN is missing, while it is being installed."""
    code = ('import sys; sys.argv = ["install_onednn.py"]; sys.path.insert(0, "tools"); import install_onednn; '
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jittor', 'jittor_utils', 'jittor_sbvsr')))")
    r = run_child([sys.executable, '-c', code], cwd=ROOT, env=dict(os.environ, use_mkl='1'))
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stderr
    assert r.stderr == ''


def test_onednn_off_without_the_vc_redistributable(rt, monkeypatch):
    """Windows: oneDNN's dnnl.dll needs msvcp140.dll and vcomp140.dll (the VC++ redistributable;
    python.org's Python ships only vcruntime140(_1).dll): without them oneDNN is turned off."""
    d = str(_fake_onednn(Path(os.environ['JITTOR_HOME'], '.cache', 'jittor', 'mkl', 'dnnl_win_2.2.0_cpu_vcomp'),
                         rt.onednn_files(windows=True) + rt.onednn_files(windows=False)))
    monkeypatch.delenv('cc_path', raising=False)  # (Jittor's import sets it: its compiler's path)
    msvc = Path(rt.jittor_msvc_bin())  # Jittor adds its MSVC's folder to the DLL search path
    python_org = _Loader('vcruntime140.dll', 'vcruntime140_1.dll')
    with monkeypatch.context() as m:  # only around the calls: pathlib follows os.name too
        m.setattr(rt.os, 'name', 'nt')
        what, fix = rt.onednn_problem(d, python_org)
        everything = rt.onednn_problem(d, _Loader(*rt.VC_RUNTIME))
    assert what == 'oneDNN needs the Visual C++ redistributable (msvcp140.dll, vcomp140.dll not found)'
    assert fix == 'install it: winget install --id Microsoft.VCRedist.2015+.x64 -e'
    assert everything is None
    msvc.mkdir(parents=True)
    for name in ('msvcp140.dll', 'vcomp140.dll'):
        (msvc / name).write_bytes(b'')
    with monkeypatch.context() as m:
        m.setattr(rt.os, 'name', 'nt')
        assert rt.onednn_problem(d, python_org) is None
    assert rt.onednn_problem(d, _Loader()) is None  # no such DLLs elsewhere


def test_prepare_turns_onednn_off_in_one_line(rt, monkeypatch, capsys):
    for k in ('use_mkl', 'nvcc_path', 'cache_name'):
        monkeypatch.setenv(k, 'placeholder')
        monkeypatch.delenv(k)
    monkeypatch.setenv('nvcc_path', '')
    monkeypatch.setenv('cache_name', 'sbvsr_test')
    monkeypatch.delitem(sys.modules, 'jittor', raising=False)  # as before the first import
    monkeypatch.setattr(rt, 'onednn_problem', lambda: ('oneDNN needs the Visual C++ redistributable (x)', 'fix'))
    rt.prepare()
    assert os.environ['use_mkl'] == '0' and not rt.onednn_enabled()
    assert capsys.readouterr().err == ('jittor-sbvsr: warning: oneDNN needs the Visual C++ redistributable (x), '
                                       'CPU convolutions will be ~80x slower (fix)\n')


class _WindowsCtypes:
    """ctypes as on Windows: ``CDLL(None)`` raises TypeError (no whole-process symbol lookup), the
    driver is nvcuda.dll; its cuMemGetInfo_v2 answers ``result`` with 3 GiB free of 4."""

    def __init__(self, result=0):
        import ctypes
        self.c_size_t, self.byref, self.result = ctypes.c_size_t, ctypes.byref, result

    def CDLL(self, name):
        if '/' in name or '\\' in name or name != 'nvcuda.dll':  # Windows' CDLL looks in its name: TypeError on None
            raise OSError(f'Could not find module {name!r} (or one of its dependencies)')
        return self

    def cuMemGetInfo_v2(self, free, total):
        free._obj.value, total._obj.value = 3 * 2 ** 30, 4 * 2 ** 30
        return self.result


def test_device_memory_asked_the_windows_way(monkeypatch):
    import types
    from jittor_sbvsr.utils import memory
    with pytest.raises(TypeError):
        _WindowsCtypes().CDLL(None)
    info = types.SimpleNamespace(total_cuda_ram=8 * 2 ** 30, total_cuda_used=2 ** 30)
    with monkeypatch.context() as m:  # only around the calls: pathlib follows os.name too
        m.setattr(os, 'name', 'nt')  # runtime.cuda_driver: nvcuda.dll
        driver = memory.cuda_memory(_WindowsCtypes())
        # no context current on this thread (CUDA_ERROR_INVALID_CONTEXT): Jittor's own count
        m.setitem(sys.modules, 'jittor', types.SimpleNamespace(get_mem_info=lambda: info))
        jittors = memory.cuda_memory(_WindowsCtypes(result=201))
    assert driver == (3 * 2 ** 30, 4 * 2 ** 30) and jittors == (7 * 2 ** 30, 8 * 2 ** 30)


def test_host_memory_asked_the_windows_way():
    """GlobalMemoryStatusEx fills MEMORYSTATUSEX (64 bytes: two DWORDs, then ullTotalPhys at 8 and
    ullAvailPhys at 16) and fails when dwLength is not its size."""
    import ctypes
    import struct
    from jittor_sbvsr.utils import memory

    class Kernel32:
        def GlobalMemoryStatusEx(self, ref):
            s = ref._obj
            if ctypes.sizeof(s) != 64 or s.length != 64:
                return 0
            ctypes.memmove(ctypes.addressof(s) + 8, struct.pack('<QQ', 16 * 2 ** 30, 5 * 2 ** 30), 16)
            return 1
    assert memory._windows_memory(Kernel32()) == (5 * 2 ** 30, 16 * 2 ** 30)


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
    r = run_child(['g++', '-E', '-P', '-x', 'c++', *flags, '-'], input=text, capture_output=True,
                  text=True, encoding='utf-8', timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which('g++') is None, reason="g++'s preprocessor reads the #if logic (not installed)")
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
